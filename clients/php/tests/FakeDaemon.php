<?php

declare(strict_types=1);

namespace Apnsd\Tests;

/**
 * Runs tests/fake_daemon.php in a subprocess on a socket in a fresh temp dir.
 */
final class FakeDaemon
{
    /** @var resource */
    private $process;
    /** @var resource */
    private $stdout;
    /** @var string */
    private $dir;
    /** @var string */
    public $socketPath;
    /** @var string */
    public $logPath;

    /** @param array<string, mixed> $script see tests/fake_daemon.php */
    public function __construct(array $script = [])
    {
        $this->dir = TestDirs::make('apnsd-php-fake-');
        $this->socketPath = $this->dir . '/apnsd.sock';
        $this->logPath = $this->dir . '/received.log';
        touch($this->logPath);
        $cmd = [PHP_BINARY, __DIR__ . '/fake_daemon.php', $this->socketPath, json_encode((object) $script), $this->logPath];
        $pipes = [];
        $process = proc_open($cmd, [0 => ['file', '/dev/null', 'r'], 1 => ['pipe', 'w'], 2 => ['file', $this->dir . '/stderr.log', 'w']], $pipes);
        if (!is_resource($process)) {
            throw new \RuntimeException('cannot start the fake daemon');
        }
        $this->process = $process;
        $this->stdout = $pipes[1];
        $read = [$this->stdout];
        $w = null;
        $e = null;
        if (stream_select($read, $w, $e, 10) !== 1 || trim((string) fgets($this->stdout)) !== 'READY') {
            $this->stop();
            throw new \RuntimeException('the fake daemon did not start: ' . @file_get_contents($this->dir . '/stderr.log'));
        }
    }

    /**
     * What the fake received: a list of [connection number, line, unix time read].
     *
     * @return list<array{0: int, 1: string, 2: float}>
     */
    public function received(): array
    {
        $out = [];
        foreach (file($this->logPath, FILE_IGNORE_NEW_LINES) ?: [] as $row) {
            [$conn, $time, $line] = explode("\t", $row, 3);
            $out[] = [(int) $conn, $line, (float) $time];
        }

        return $out;
    }

    public function stop(): void
    {
        if (is_resource($this->process)) {
            proc_terminate($this->process, 9);
            fclose($this->stdout);
            proc_close($this->process);
        }
        TestDirs::remove($this->dir);
    }

    public function __destruct()
    {
        $this->stop();
    }
}
