<?php

/*
 * Holds apnsd's listening socket, as systemd's apnsd.socket does, and
 * (re)starts `apnsd -demo` on it by socket activation (LISTEN_FDS=1), for
 * the integration test of restarts under load.
 *
 *   php tests/restarter.php APNSD_BIN SOCKET LOGFILE
 *
 * Commands on stdin, one a line; answers on stdout:
 *   (at start)  -> "UP 0" once apnsd answers a ping (or "FAIL <why>")
 *   RESTART     -> SIGTERM apnsd, wait for it to exit, start a new one:
 *                  "UP <n> <exit code of the old one>" (or "FAIL <why>")
 *   STOP / EOF  -> SIGTERM apnsd, wait, exit
 * Connections made while no apnsd runs wait in the held socket's backlog.
 */

declare(strict_types=1);

require __DIR__ . '/../autoload.php';

[$_, $bin, $socket, $log] = $argv;

@unlink($socket);
$server = stream_socket_server('unix://' . $socket, $errno, $errstr);
if ($server === false) {
    echo "FAIL cannot listen on $socket: $errstr\n";
    exit(1);
}

/** @return resource|string a process, or why it failed */
function startApnsd(string $bin, string $socket, string $log, $server)
{
    $process = proc_open(
        ['/bin/sh', '-c', 'LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=apnsd.socket exec "$0" "$@"', $bin, '-demo', '-socket', $socket],
        [0 => ['file', '/dev/null', 'r'], 1 => ['file', $log, 'a'], 2 => ['file', $log, 'a'], 3 => $server],
        $pipes
    );
    if (!is_resource($process)) {
        return "cannot start $bin";
    }
    $deadline = microtime(true) + 20.0;
    while (microtime(true) < $deadline) {
        if (!proc_get_status($process)['running']) {
            return 'apnsd exited during start; see ' . $log;
        }
        try {
            $pong = (new Apnsd\Client($socket, 2.0, ['log' => static function (string $m): void {
            }]))->ping();
            if (($pong['pong'] ?? null) === true) {
                return $process;
            }
        } catch (Apnsd\Exception\ApnsdException $e) {
            // not ready yet
        }
        usleep(50000);
    }
    proc_terminate($process, 9);

    return 'apnsd did not answer ping within 20 s; see ' . $log;
}

/** SIGTERM, wait (SIGKILL after 15 s); the exit code. */
function stopApnsd($process): int
{
    proc_terminate($process, 15);
    $deadline = microtime(true) + 15.0;
    $code = -1;
    while (true) {
        $st = proc_get_status($process);
        if (!$st['running']) {
            $code = $st['exitcode'];
            break;
        }
        if (microtime(true) > $deadline) {
            proc_terminate($process, 9);
            $deadline = PHP_INT_MAX;
        }
        usleep(20000);
    }
    proc_close($process);

    return $code;
}

$process = startApnsd($bin, $socket, $log, $server);
if (!is_resource($process)) {
    echo "FAIL $process\n";
    exit(1);
}
echo "UP 0\n";
$n = 0;
while (($line = fgets(STDIN)) !== false) {
    if (trim($line) !== 'RESTART') {
        break;
    }
    $code = stopApnsd($process);
    $process = startApnsd($bin, $socket, $log, $server);
    if (!is_resource($process)) {
        echo "FAIL $process\n";
        exit(1);
    }
    $n++;
    echo "UP $n $code\n";
}
stopApnsd($process);
fclose($server);
@unlink($socket);
