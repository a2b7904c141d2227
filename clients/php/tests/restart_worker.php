<?php

/*
 * One sender for the restarts-under-load integration test: a persistent
 * Apnsd\Client that sends until told to stop.
 *
 *   php tests/restart_worker.php SOCKET WORKER_NUMBER MAX_ATTEMPTS
 *
 * Odd workers send pipelined batches of 16 (sendMany), even ones single
 * sends. Prints "ok <n>" after each batch that fully succeeded and
 * "fail <what>" for every failure; on "STOP" (or EOF) on stdin, prints
 * "DONE <ok> <failed> <stats as JSON>" and exits.
 */

declare(strict_types=1);

require __DIR__ . '/../autoload.php';

[$_, $socket, $worker, $maxAttempts] = $argv;
$worker = (int) $worker;
$client = new Apnsd\Client($socket, 30.0, ['max_attempts' => (int) $maxAttempts, 'log' => static function (string $m): void {
}]);
stream_set_blocking(STDIN, false);
$ok = 0;
$failed = 0;
$i = 0;
while (true) {
    $line = fgets(STDIN);
    if ($line !== false && trim($line) === 'STOP' || feof(STDIN)) {
        break;
    }
    $i++;
    $notifications = [];
    for ($j = 0, $n = $worker % 2 ? 16 : 1; $j < $n; $j++) {
        $notifications[] = ['token' => sprintf('a1%02x%060x', $worker, $i * 100 + $j), 'alert' => 'restart test'];
    }
    try {
        $results = $client->sendMany($notifications);
    } catch (Apnsd\Exception\ApnsdException $e) {
        $failed += count($notifications);
        echo 'fail ', get_class($e), ': ', $e->getMessage(), "\n";
        continue;
    }
    $good = 0;
    foreach ($results as $r) {
        if ($r->isOk()) {
            $good++;
        } else {
            $failed++;
            echo 'fail ', json_encode($r->getRaw()), "\n";
        }
    }
    $ok += $good;
    echo "ok $good\n";
}
echo 'DONE ', $ok, ' ', $failed, ' ', json_encode($client->getStats()), "\n";
