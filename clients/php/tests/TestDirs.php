<?php

declare(strict_types=1);

namespace Apnsd\Tests;

/** Short temp dirs (a Unix socket path must stay under ~100 bytes). */
final class TestDirs
{
    public static function make(string $prefix): string
    {
        $base = is_dir('/tmp') ? '/tmp' : sys_get_temp_dir();
        for ($i = 0; $i < 100; $i++) {
            $dir = $base . '/' . $prefix . bin2hex(random_bytes(4));
            if (@mkdir($dir, 0700)) {
                return $dir;
            }
        }
        throw new \RuntimeException('cannot create a temp dir in ' . $base);
    }

    public static function remove(string $dir): void
    {
        if (!is_dir($dir)) {
            return;
        }
        foreach (scandir($dir) ?: [] as $name) {
            if ($name === '.' || $name === '..') {
                continue;
            }
            $path = $dir . '/' . $name;
            if (is_dir($path) && !is_link($path)) {
                self::remove($path);
            } else {
                @chmod($path, 0600);
                @unlink($path);
            }
        }
        @rmdir($dir);
    }
}
