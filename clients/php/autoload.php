<?php

// For projects without Composer: require this file, then use Apnsd\Client.
//   require '/path/to/clients/php/autoload.php';
// (With Composer, the PSR-4 entry in composer.json does the same.)

spl_autoload_register(static function (string $class): void {
    $prefix = 'Apnsd\\';
    if (strncmp($class, $prefix, strlen($prefix)) !== 0) {
        return;
    }
    $file = __DIR__ . '/src/' . str_replace('\\', '/', substr($class, strlen($prefix))) . '.php';
    if (is_file($file)) {
        require $file;
    }
});
