<?php

declare(strict_types=1);

// The tests use the Composer-less autoloader on purpose: it must work.
require __DIR__ . '/../autoload.php';
require __DIR__ . '/TestDirs.php';
require __DIR__ . '/FakeDaemon.php';
