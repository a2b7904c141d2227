<?php

declare(strict_types=1);

namespace Apnsd\Tests\Integration;

use Apnsd\Tests\TestDirs;
use PHPUnit\Framework\TestCase;

/**
 * Zero failed sends across restarts, with the listening socket held as
 * systemd's apnsd.socket holds it: tests/restarter.php binds the socket and
 * hands it to each `apnsd -demo` it starts (LISTEN_FDS=1). Four worker
 * processes (tests/restart_worker.php), each with one persistent client,
 * send while apnsd is restarted three times. The clients retry
 * shutting_down at once on a fresh connection and resend what a stopping
 * apnsd left unanswered. (APNSD_TEST_MAX_ATTEMPTS=1 turns their retries
 * off: the test then usually fails with shutting_down.)
 *
 * Needs the real binary ($APNSD_BIN or <repo>/bin/apnsd); a missing binary
 * fails the test.
 */
final class RestartTest extends TestCase
{
    private const WORKERS = 4;
    private const RESTARTS = 3;
    private const PER_PHASE = 40;

    /** @var list<array{0: resource, 1: array<int, resource>}> */
    private $procs = [];
    /** @var string|null */
    private $dir;

    protected function tearDown(): void
    {
        foreach (array_reverse($this->procs) as [$proc, $pipes]) {
            if (is_resource($pipes[0])) {
                @fwrite($pipes[0], "STOP\n");
                fclose($pipes[0]);
            }
            $deadline = microtime(true) + 20;
            while (proc_get_status($proc)['running'] && microtime(true) < $deadline) {
                usleep(50000);
            }
            if (proc_get_status($proc)['running']) {
                proc_terminate($proc, 9);
            }
            proc_close($proc);
        }
        $this->procs = [];
        if ($this->dir !== null) {
            TestDirs::remove($this->dir);
        }
    }

    /**
     * @param list<string> $cmd
     *
     * @return array{0: resource, 1: array<int, resource>}
     */
    private function spawn(array $cmd, string $stderr): array
    {
        $proc = proc_open($cmd, [0 => ['pipe', 'r'], 1 => ['pipe', 'w'], 2 => ['file', $stderr, 'a']], $pipes);
        $this->assertIsResource($proc, 'cannot start ' . implode(' ', $cmd));
        stream_set_blocking($pipes[1], false);
        $this->procs[] = [$proc, $pipes];

        return [$proc, $pipes];
    }

    public function testFourPersistentClientsThreeRestartsZeroFailedSends(): void
    {
        $repo = dirname(__DIR__, 4);
        $bin = getenv('APNSD_BIN') ?: $repo . '/bin/apnsd';
        $this->assertTrue(is_file($bin) && is_executable($bin), "apnsd binary not found at $bin: build it with `cd $repo && go build -o bin/apnsd ./cmd/apnsd`, or set APNSD_BIN");
        $maxAttempts = getenv('APNSD_TEST_MAX_ATTEMPTS') ?: '5';
        $this->dir = TestDirs::make('apnsd-php-rs-');
        $socket = $this->dir . '/apnsd.sock';
        $log = $this->dir . '/apnsd.log';
        $stderr = $this->dir . '/stderr.log';

        [, $rpipes] = $this->spawn([PHP_BINARY, dirname(__DIR__) . '/restarter.php', $bin, $socket, $log], $stderr);
        $up = $this->expectLine($rpipes[1], 30.0, [], $log);
        $this->assertSame('UP 0', $up, (string) @file_get_contents($log));

        $workers = [];
        for ($k = 0; $k < self::WORKERS; $k++) {
            $workers[] = $this->spawn([PHP_BINARY, dirname(__DIR__) . '/restart_worker.php', $socket, (string) $k, $maxAttempts], $stderr)[1];
        }
        $ok = 0;
        $failures = [];
        $pump = function () use ($workers, &$ok, &$failures): void {
            foreach ($workers as $pipes) {
                while (($line = fgets($pipes[1])) !== false) {
                    $line = rtrim($line, "\n");
                    if (strncmp($line, 'ok ', 3) === 0) {
                        $ok += (int) substr($line, 3);
                    } elseif ($line !== '') {
                        $failures[] = $line;
                    }
                }
            }
        };
        $waitFor = function (int $more) use ($pump, &$ok, &$failures, $log): void {
            $pump();
            $target = $ok + $more;
            $deadline = microtime(true) + 60;
            while ($ok < $target && $failures === [] && microtime(true) < $deadline) {
                usleep(20000);
                $pump();
            }
            $this->assertSame([], array_slice($failures, 0, 5));
            $this->assertGreaterThanOrEqual($target, $ok, "no progress; apnsd log:\n" . @file_get_contents($log));
        };

        for ($n = 1; $n <= self::RESTARTS; $n++) {
            $waitFor(self::PER_PHASE);
            fwrite($rpipes[0], "RESTART\n");
            $up = $this->expectLine($rpipes[1], 60.0, [$pump], $log);
            $this->assertSame("UP $n 0", $up, 'apnsd restarted, and the old one exited 0 on SIGTERM');
        }
        $waitFor(self::PER_PHASE);

        $connects = 0;
        $totalOk = 0;
        $totalFailed = 0;
        foreach ($workers as $pipes) {
            fwrite($pipes[0], "STOP\n");
        }
        foreach ($workers as $pipes) {
            $deadline = microtime(true) + 60;
            $done = null;
            while ($done === null && microtime(true) < $deadline) {
                $line = fgets($pipes[1]);
                if ($line === false) {
                    usleep(20000);
                    continue;
                }
                if (strncmp($line, 'DONE ', 5) === 0) {
                    $done = explode(' ', rtrim($line, "\n"), 4);
                } elseif (strncmp($line, 'fail', 4) === 0) {
                    $failures[] = rtrim($line, "\n");
                }
            }
            $this->assertNotNull($done, 'a worker did not finish');
            $totalOk += (int) $done[1];
            $totalFailed += (int) $done[2];
            $connects += json_decode($done[3], true)['connects'];
        }
        $this->assertSame([], array_slice($failures, 0, 5));
        $this->assertSame(0, $totalFailed);
        $this->assertGreaterThanOrEqual((self::RESTARTS + 1) * self::PER_PHASE, $totalOk);
        // Some client was sending in every phase; its connection died at
        // each restart, and it reconnected.
        $this->assertGreaterThanOrEqual(self::WORKERS + self::RESTARTS, $connects);
        fwrite(STDERR, sprintf("\n  restarts under load: %d sends ok, 0 failed, %d connections\n", $totalOk, $connects));
    }

    /**
     * The next line from $stream, running $tick while waiting.
     *
     * @param resource       $stream
     * @param list<callable> $tick
     */
    private function expectLine($stream, float $seconds, array $tick, string $log): string
    {
        $deadline = microtime(true) + $seconds;
        $buf = '';
        while (microtime(true) < $deadline) {
            $chunk = fgets($stream);
            if ($chunk !== false) {
                $buf .= $chunk;
                if (substr($buf, -1) === "\n") {
                    return rtrim($buf, "\n");
                }
            }
            foreach ($tick as $f) {
                $f();
            }
            usleep(20000);
        }
        $this->fail("no answer from the restarter within $seconds s; apnsd log:\n" . @file_get_contents($log));
    }
}
