<?php

declare(strict_types=1);

namespace Apnsd\Tests\Unit;

use Apnsd\ChannelResult;
use Apnsd\Client;
use Apnsd\Exception\ConnectionLostException;
use Apnsd\Exception\DaemonUnreachableException;
use Apnsd\MulticastResult;
use Apnsd\Result;
use Apnsd\Tests\FakeDaemon;
use Apnsd\Tests\TestDirs;
use PHPUnit\Framework\TestCase;

/**
 * Protocol 1.1 features against tests/fake_daemon.php: retries of retryable
 * answers, reconnect-and-resend, deadlines, multicast, broadcast channels.
 */
final class ClientV11Test extends TestCase
{
    private const TOKEN = 'a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90';

    /** @var list<FakeDaemon> */
    private $fakes = [];

    /** @var list<float> backoff sleeps the client asked for */
    private $sleeps = [];

    /** @var list<string> */
    private $logged = [];

    protected function tearDown(): void
    {
        foreach ($this->fakes as $fake) {
            $fake->stop();
        }
        $this->fakes = [];
    }

    /** @param array<string, mixed> $script */
    private function fake(array $script = []): FakeDaemon
    {
        $fake = new FakeDaemon($script);
        $this->fakes[] = $fake;

        return $fake;
    }

    /** @param array<string, mixed> $options */
    private function client(FakeDaemon $fake, array $options = [], float $timeout = 5.0): Client
    {
        $options += [
            'sleep' => function (float $s): void {
                $this->sleeps[] = $s;
                usleep(2000);
            },
            'log' => function (string $m): void {
                $this->logged[] = $m;
            },
        ];

        return new Client($fake->socketPath, $timeout, $options);
    }

    /** A 32-byte token for the fake's retry hooks: prefix, count, filler. */
    private static function hook(string $prefix, int $times, int $n = 0): string
    {
        $head = $prefix . dechex($times);

        return $head . str_pad(dechex($n), 64 - strlen($head), '0', STR_PAD_LEFT);
    }

    private static function tok(int $n, string $prefix = ''): string
    {
        return $prefix . str_pad(dechex($n), 64 - strlen($prefix), '0', STR_PAD_LEFT);
    }

    /**
     * The decoded requests the fake read, with their connection number and read time.
     *
     * @return list<array{0: int, 1: array<string, mixed>, 2: float}>
     */
    private static function rows(FakeDaemon $fake): array
    {
        $out = [];
        foreach ($fake->received() as [$conn, $line, $time]) {
            $out[] = [$conn, json_decode($line, true), $time];
        }

        return $out;
    }

    /** @return list<array{0: int, 1: array<string, mixed>, 2: float}> */
    private static function rowsFor(FakeDaemon $fake, string $token): array
    {
        return array_values(array_filter(self::rows($fake), static function (array $row) use ($token): bool {
            return ($row[1]['token'] ?? null) === $token;
        }));
    }

    // ----------------------------------------------------------- retries

    public function testShuttingDownIsRetriedAtOnceOnAFreshConnection(): void
    {
        $fake = $this->fake();
        $t = self::hook('ee5d', 1);
        $r = $this->client($fake)->send($t, ['alert' => 'x']);
        $this->assertTrue($r->isOk(), $r->describe());
        $this->assertSame([1, 2], array_column(self::rowsFor($fake, $t), 0), 'retried on a second connection');
        $this->assertSame([], $this->sleeps, 'at once: no backoff');
    }

    public function testQueueFullBacksOffWithJitterOnTheSameConnection(): void
    {
        $fake = $this->fake();
        $t = self::hook('ee9f', 3);
        $client = $this->client($fake, ['retry_backoff' => 0.2]);
        $r = $client->send($t, ['alert' => 'x']);
        $this->assertTrue($r->isOk(), $r->describe());
        $this->assertSame([1, 1, 1, 1], array_column(self::rowsFor($fake, $t), 0));
        $this->assertCount(3, $this->sleeps);
        foreach ($this->sleeps as $n => $slept) {
            $base = min(1.0, 0.2 * 2 ** $n);
            $this->assertGreaterThanOrEqual($base * 0.5 - 1e-9, $slept);
            $this->assertLessThanOrEqual($base + 1e-9, $slept);
        }
        $this->assertSame(3, $client->getStats()['retries']);
    }

    public function testUnavailableBacksOff(): void
    {
        $fake = $this->fake();
        $t = self::hook('ee0a', 2);
        $this->assertTrue($this->client($fake)->send($t, ['alert' => 'x'])->isOk());
        $this->assertCount(3, self::rowsFor($fake, $t));
        $this->assertCount(2, $this->sleeps);
    }

    public function testGivesUpAfterMaxAttemptsWithTheLastAnswer(): void
    {
        $fake = $this->fake();
        $t = self::hook('ee9f', 9);
        $r = $this->client($fake, ['max_attempts' => 3])->send($t, ['alert' => 'x']);
        $this->assertFalse($r->isOk());
        $this->assertSame('queue_full', $r->getError());
        $this->assertTrue($r->isRetryable());
        $this->assertCount(3, self::rowsFor($fake, $t));
    }

    public function testRetriesOff(): void
    {
        $fake = $this->fake();
        $t = self::hook('ee5d', 1);
        $r = $this->client($fake, ['max_attempts' => 1])->send($t, ['alert' => 'x']);
        $this->assertSame('shutting_down', $r->getError());
        $this->assertCount(1, self::rowsFor($fake, $t));
    }

    public function testOtherRetryableCodesAndApnsStatusesAreNotRetried(): void
    {
        $fake = $this->fake();
        $client = $this->client($fake);
        $t = 'ee70' . str_repeat('0', 60);
        $this->assertSame('timeout', $client->send($t, ['alert' => 'x'])->getError());
        $this->assertCount(1, self::rowsFor($fake, $t));
        $busy = '0429' . substr(self::TOKEN, 4);
        $this->assertSame(429, $client->send($busy)->getStatus());
        $this->assertCount(1, self::rowsFor($fake, $busy));
    }

    public function testExpiredIsFinal(): void
    {
        $fake = $this->fake(['default' => ['answer' => ['ok' => false, 'error' => 'expired', 'message' => 'read after its deadline', 'retryable' => false]]]);
        $r = $this->client($fake)->send(self::TOKEN, ['alert' => 'x']);
        $this->assertSame('expired', $r->getError());
        $this->assertFalse($r->isRetryable());
        $this->assertCount(1, $fake->received());
    }

    public function testRetriesNeverOutliveTheTimeout(): void
    {
        // Real sleeps: backoff 0.2 s doubling, timeout 0.8 s, a token refused
        // 15 times: the client must stop retrying at the deadline.
        $fake = $this->fake();
        $t = self::hook('ee9f', 15);
        $client = new Client($fake->socketPath, 0.8, ['retry_backoff' => 0.2, 'max_attempts' => 100]);
        $r = $client->send($t, ['alert' => 'x']);
        $this->assertSame('queue_full', $r->getError());
        $rows = self::rowsFor($fake, $t);
        $this->assertGreaterThan(1, count($rows));
        $this->assertLessThan(15, count($rows));
        $deadlines = array_unique(array_map(static function (array $row): int {
            return $row[1]['deadline'];
        }, $rows));
        $this->assertCount(1, $deadlines, 'every resend carries the first deadline');
        $deadline = reset($deadlines);
        foreach ($rows as [$conn, $req, $time]) {
            // (slack: the fake may read a line late on a loaded machine; a
            // client ignoring the deadline would write seconds after it)
            $this->assertLessThanOrEqual($deadline + 300, $time * 1000, 'a retry was written after the deadline');
        }
    }

    public function testSendManyMixesRetriesAndKeepsKeys(): void
    {
        $fake = $this->fake();
        $notifications = [];
        for ($i = 0; $i < 24; $i++) {
            switch ($i % 4) {
                case 0:
                    $t = self::tok($i + 1);
                    break;
                case 1:
                    $t = self::hook('ee5d', 1, $i);
                    break;
                case 2:
                    $t = self::hook('ee9f', 2, $i);
                    break;
                default:
                    $t = self::tok($i, '0410');
            }
            $notifications["n$i"] = ['token' => $t, 'alert' => 'x'];
        }
        $results = $this->client($fake)->sendMany($notifications);
        $this->assertSame(array_keys($notifications), array_keys($results));
        foreach ($results as $key => $r) {
            $this->assertSame($notifications[$key]['token'], $r->getRaw()['received']['token']);
            if (($key[1] ?? '') !== '' && (int) substr($key, 1) % 4 === 3) {
                $this->assertSame(410, $r->getStatus());
            } else {
                $this->assertTrue($r->isOk(), $key . ': ' . $r->describe());
            }
        }
    }

    // ----------------------------------------------------------- resends

    public function testHangupMidPipelineResendsWhatWasNotAnswered(): void
    {
        $fake = $this->fake(['connections' => [['hangup_after_reading' => 5]]]);
        $notifications = [];
        for ($i = 0; $i < 10; $i++) {
            $notifications[] = ['token' => self::tok($i + 1), 'alert' => 'x'];
        }
        $client = $this->client($fake);
        $results = $client->sendMany($notifications);
        foreach ($results as $i => $r) {
            $this->assertTrue($r->isOk(), $r->describe());
            $this->assertSame(self::tok($i + 1), $r->getRaw()['received']['token']);
        }
        // at least once: the five read on the first connection went again
        for ($i = 0; $i < 5; $i++) {
            $rows = self::rowsFor($fake, self::tok($i + 1));
            $this->assertSame([1, 2], array_column($rows, 0));
            $this->assertSame($rows[0][1]['deadline'], $rows[1][1]['deadline']);
            $this->assertNotSame($rows[0][1]['id'], $rows[1][1]['id']);
        }
        $this->assertSame(10, $client->getStats()['resends']);
    }

    public function testSingleSendResentAfterHangup(): void
    {
        $fake = $this->fake(['connections' => [['hangup_after_reading' => 1]]]);
        $this->assertTrue($this->client($fake)->send(self::TOKEN, ['alert' => 'x'])->isOk());
        $this->assertSame([1, 2], array_column(self::rowsFor($fake, self::TOKEN), 0));
    }

    public function testResentUntilAttemptsRunOut(): void
    {
        $fake = $this->fake(['default' => ['hangup_after_reading' => 1]]);
        try {
            $this->client($fake, ['max_attempts' => 3])->send(self::TOKEN, ['alert' => 'x']);
            $this->fail('expected a ConnectionLostException');
        } catch (ConnectionLostException $e) {
            $this->assertStringContainsString('could not be resent (3 attempt(s)', $e->getMessage());
        }
        $this->assertCount(3, $fake->received());
    }

    public function testResendOffThrows(): void
    {
        $fake = $this->fake(['connections' => [['hangup_after_reading' => 3]]]);
        try {
            $this->client($fake, ['resend_unanswered' => false])->sendMany(array_fill(0, 6, ['token' => self::TOKEN]));
            $this->fail('expected a ConnectionLostException');
        } catch (ConnectionLostException $e) {
            $this->assertStringContainsString('not resent', $e->getMessage());
            $this->assertSame([], $e->getPartialResults());
        }
    }

    public function testChannelCreateIsNotResent(): void
    {
        $fake = $this->fake(['connections' => [['hangup_after_reading' => 1]]]);
        $client = $this->client($fake);
        try {
            $client->channelCreate('latest', ['app' => 'demo', 'env' => 'sandbox']);
            $this->fail('expected a ConnectionLostException');
        } catch (ConnectionLostException $e) {
            $this->assertStringContainsString('not resent', $e->getMessage());
        }
        $this->assertCount(1, $fake->received());
        $this->assertSame([], $client->channelList(['app' => 'demo', 'env' => 'sandbox'])->getChannels());
    }

    public function testFirstConnectFailureIsNotRetried(): void
    {
        $dir = TestDirs::make('apnsd-php-none-');
        try {
            $client = new Client($dir . '/apnsd.sock', 5.0, ['sleep' => function (float $s): void {
                $this->sleeps[] = $s;
            }]);
            $this->expectException(DaemonUnreachableException::class);
            $client->send(self::TOKEN);
        } finally {
            $this->assertSame([], $this->sleeps);
            TestDirs::remove($dir);
        }
    }

    // ---------------------------------------------------------- deadline

    public function testEveryRequestCarriesTheDeadline(): void
    {
        $fake = $this->fake();
        $client = $this->client($fake);
        $before = microtime(true);
        $client->send(self::TOKEN, ['alert' => 'x']);
        $client->sendMany([['token' => self::TOKEN], ['token' => self::TOKEN]]);
        $client->sendMulticast([self::TOKEN, self::TOKEN], ['alert' => 'x']);
        $client->ping();
        $client->status();
        $client->channelCreate('none');
        $client->channelList();
        $after = microtime(true);
        $rows = self::rows($fake);
        $this->assertCount(8, $rows);
        foreach ($rows as [$conn, $req]) {
            $this->assertIsInt($req['deadline']);
            $this->assertGreaterThanOrEqual((int) floor(($before + 5.0) * 1000), $req['deadline']);
            $this->assertLessThanOrEqual((int) floor(($after + 5.0) * 1000) + 1, $req['deadline']);
        }
    }

    public function testNoDeadlineWhenOff(): void
    {
        $fake = $this->fake();
        $this->client($fake, ['send_deadline' => false])->ping();
        $this->assertArrayNotHasKey('deadline', self::rows($fake)[0][1]);
    }

    public function testOlderDaemonWithoutDeadlineField(): void
    {
        $fake = $this->fake(['connections' => [['no_deadline_field' => true]]]);
        $client = $this->client($fake);
        $r = $client->send(self::TOKEN, ['alert' => 'x']);
        $this->assertTrue($r->isOk(), $r->describe());
        $this->assertTrue($client->sendMany(array_fill(0, 3, ['token' => self::TOKEN]))[2]->isOk());
        $rows = self::rows($fake);
        $this->assertCount(5, $rows);
        $this->assertArrayHasKey('deadline', $rows[0][1], 'refused, not sent');
        for ($i = 1; $i < 5; $i++) {
            $this->assertArrayNotHasKey('deadline', $rows[$i][1]);
            $this->assertSame(1, $rows[$i][0]);
        }
        $this->assertCount(1, $this->logged);
        $this->assertStringContainsString('"deadline"', $this->logged[0]);
        // A new connection tries the field again (apnsd may have been upgraded).
        $client->close();
        $client->ping();
        $last = self::rows($fake)[5];
        $this->assertSame(2, $last[0]);
        $this->assertArrayHasKey('deadline', $last[1]);
    }

    // --------------------------------------------------------- multicast

    public function testMulticastResultsInOrderWithCountsAndHelpers(): void
    {
        $fake = $this->fake();
        $gone = self::tok(1, '0410');
        $logged = '<' . substr(self::TOKEN, 0, 8) . ' ' . strtoupper(substr(self::TOKEN, 8)) . '>';
        $tokens = [self::TOKEN, $gone, 'not-hex', self::tok(2, '0400'), $logged];
        $r = $this->client($fake)->sendMulticast($tokens, ['alert' => 'Sale', 'badge' => 1, 'app' => 'demo', 'collapse_id' => 'c']);
        $this->assertInstanceOf(MulticastResult::class, $r);
        $this->assertFalse($r->isOk());
        $this->assertSame([2, 3, 0], [$r->getSent(), $r->getFailed(), $r->getQueued()]);
        $this->assertCount(5, $r);
        $oks = [];
        foreach ($r as $entry) {
            $oks[] = $entry->isOk();
        }
        $this->assertSame([true, false, false, false, true], $oks);
        $results = $r->getResults();
        $this->assertTrue($results[1]->isUnregistered());
        $this->assertSame($gone, $results[1]->getToken());
        $this->assertSame('invalid_token', $results[2]->getError());
        $this->assertSame('BadDeviceToken', $results[3]->getReason());
        $this->assertSame(self::TOKEN, $results[4]->token, 'cleaned by apnsd');
        $this->assertSame([$gone], $r->getUnregisteredTokens(), 'as passed');
        $this->assertSame(array_slice($tokens, 1, 3), $r->getFailedTokens());
        $this->assertSame([self::TOKEN, $logged], $r->getSucceededTokens());
        $this->assertNull($r->getError());
        $this->assertSame('5 token(s): 2 sent, 3 failed', $r->describe());
        $rows = self::rows($fake);
        $this->assertCount(1, $rows);
        $req = $rows[0][1];
        $this->assertSame($tokens, $req['tokens']);
        $this->assertArrayNotHasKey('token', $req);
        $this->assertSame(['Sale', 1, 'demo', 'c'], [$req['alert'], $req['badge'], $req['app'], $req['collapse_id']]);
    }

    public function testMoreThan1000TokensAreSplit(): void
    {
        $fake = $this->fake();
        $tokens = [];
        for ($i = 0; $i < 2500; $i++) {
            $tokens[] = $i % 7 ? self::tok($i + 1) : self::tok($i, '0410');
        }
        $r = $this->client($fake, ['max_line_bytes' => 1 << 20])->sendMulticast($tokens, ['alert' => 'x']);
        $sizes = array_map(static function (array $row): int {
            return count($row[1]['tokens']);
        }, self::rows($fake));
        $this->assertSame([1000, 1000, 500], $sizes);
        $this->assertSame([1], array_values(array_unique(array_column(self::rows($fake), 0))), 'one connection');
        $got = [];
        foreach ($r as $entry) {
            $got[] = $entry->getToken();
        }
        $this->assertSame($tokens, $got);
        $dead = array_values(array_filter($tokens, static function (string $t): bool {
            return strncmp($t, '0410', 4) === 0;
        }));
        $this->assertSame($dead, $r->getUnregisteredTokens());
        $this->assertSame(count($dead), $r->getFailed());
        $this->assertCount(3, $r->getRaw());
    }

    public function testAFullBatchOf64HexTokensIsOneLine(): void
    {
        // 1000 tokens of 64 hex digits make a line of about 67 KB: apnsd's
        // default 128 KiB limit takes it, and so does the client's default.
        $this->assertSame(131072, Client::DEFAULT_LINE_LIMIT);
        $fake = $this->fake();
        $tokens = [];
        for ($i = 0; $i < 2500; $i++) {
            $tokens[] = self::tok($i + 1);
        }
        $r = $this->client($fake)->sendMulticast($tokens, ['payload' => ['aps' => ['alert' => str_repeat('y', 3000)]]]);
        $this->assertTrue($r->isOk());
        $lines = $fake->received();
        $this->assertSame([1000, 1000, 500], array_map(static function (array $row): int {
            return count(json_decode($row[1], true)['tokens']);
        }, $lines));
        $this->assertGreaterThan(65536, strlen($lines[0][1]) + 1);
        foreach ($lines as [$conn, $line]) {
            $this->assertLessThanOrEqual(131072, strlen($line) + 1);
        }
    }

    public function testLinesStayWithinTheLineLimit(): void
    {
        // 1000 tokens of 200 hex digits (longer tokens than Apple's today)
        // would make a line of about 200 KB: the client splits by bytes.
        $fake = $this->fake();
        $tokens = [];
        for ($i = 0; $i < 2500; $i++) {
            $tokens[] = str_pad(dechex($i + 1), 200, '0', STR_PAD_LEFT);
        }
        $r = $this->client($fake)->sendMulticast($tokens, ['payload' => ['aps' => ['alert' => str_repeat('y', 3000)]]]);
        $this->assertTrue($r->isOk());
        $lines = $fake->received();
        $this->assertGreaterThanOrEqual(4, count($lines), '3 would do by count alone');
        $this->assertGreaterThan(100 * 1024, strlen($lines[0][1]), 'no smaller than needed');
        $total = 0;
        foreach ($lines as [$conn, $line]) {
            $this->assertLessThanOrEqual(131072, strlen($line) + 1);
            $total += count(json_decode($line, true)['tokens']);
        }
        $this->assertSame(2500, $total);
    }

    public function testASmallerMaxLineBytesSplitsAFullBatch(): void
    {
        // An apnsd set to the old 64 KiB limit: 'max_line_bytes' => 65536.
        $fake = $this->fake();
        $tokens = [];
        for ($i = 0; $i < 1000; $i++) {
            $tokens[] = self::tok($i + 1);
        }
        $r = $this->client($fake, ['max_line_bytes' => 65536])->sendMulticast($tokens, ['alert' => 'x']);
        $this->assertTrue($r->isOk());
        $lines = $fake->received();
        $this->assertCount(2, $lines);
        foreach ($lines as [$conn, $line]) {
            $this->assertLessThanOrEqual(65536, strlen($line) + 1);
        }
    }

    public function testMulticastWaitFalseReturnsTheQueuedCount(): void
    {
        $fake = $this->fake();
        $tokens = [];
        for ($i = 0; $i < 1200; $i++) {
            $tokens[] = self::tok($i + 1);
        }
        $r = $this->client($fake)->sendMulticast($tokens, ['alert' => 'x', 'wait' => false]);
        $this->assertTrue($r->isOk());
        $this->assertSame(1200, $r->getQueued());
        $this->assertSame([0, 0], [$r->getSent(), $r->getFailed()]);
        $this->assertTrue($r->getResults()[1199]->isQueued());
        foreach (self::rows($fake) as [$conn, $req]) {
            $this->assertFalse($req['wait']);
        }
    }

    public function testMulticastWaitFalseWithRefusedTokensReadsTheResults(): void
    {
        // apnsd answers {"ok":false,"queued":N,"results":[..]} when it
        // refused some tokens of a "wait" => false multicast.
        $fake = $this->fake();
        $tokens = [self::TOKEN, 'zz', self::tok(7), 'not-hex'];
        $r = $this->client($fake)->sendMulticast($tokens, ['alert' => 'x', 'wait' => false]);
        $this->assertFalse($r->isOk());
        $this->assertSame([2, 0, 2], [$r->getQueued(), $r->getSent(), $r->getFailed()]);
        $results = $r->getResults();
        $this->assertSame([true, false, true, false], array_map(static function (Result $x): bool {
            return $x->isOk();
        }, $results));
        $this->assertSame([true, false, true, false], array_map(static function (Result $x): bool {
            return $x->isQueued();
        }, $results));
        $this->assertSame([null, 'invalid_token', null, 'invalid_token'], array_map(static function (Result $x): ?string {
            return $x->getError();
        }, $results));
        $this->assertSame(['zz', 'not-hex'], $r->getFailedTokens());
        $this->assertSame([self::TOKEN, self::tok(7)], $r->getSucceededTokens());
        $this->assertSame([], $r->getRetryableTokens());
        $this->assertNull($r->getError(), 'no whole-line refusal');
        $this->assertCount(1, $fake->received(), 'nothing resent');
        $this->assertSame(2, $r->getRaw()[0]['queued']);
        $this->assertSame('4 token(s): 2 queued, 2 failed', $r->describe());
    }

    public function testMulticastWaitFalseCountsAcrossLines(): void
    {
        // 2500 tokens in three lines; every 100th of the first 1500 is
        // invalid: two answers with results, one {"ok":true,"queued":500}.
        $fake = $this->fake();
        $tokens = [];
        $bad = [];
        for ($i = 0; $i < 2500; $i++) {
            if ($i % 100 === 0 && $i < 1500) {
                $tokens[] = $bad[] = 'xx' . str_pad(dechex($i), 62, '0', STR_PAD_LEFT);
            } else {
                $tokens[] = self::tok($i + 1);
            }
        }
        $r = $this->client($fake)->sendMulticast($tokens, ['alert' => 'x', 'wait' => false]);
        $this->assertCount(15, $bad);
        $this->assertSame([2485, 15, 0], [$r->getQueued(), $r->getFailed(), $r->getSent()]);
        $this->assertSame($bad, $r->getFailedTokens());
        $this->assertSame([[true, 990], [true, 995], [false, 500]], array_map(static function (array $raw): array {
            return [array_key_exists('results', $raw), $raw['queued']];
        }, $r->getRaw()));
    }

    public function testMulticastWaitFalseRetriesTheRetryableTokensAlone(): void
    {
        $fake = $this->fake();
        $full = self::hook('ee9f', 1);
        $client = $this->client($fake);
        $r = $client->sendMulticast([self::TOKEN, $full, 'zz'], ['alert' => 'x', 'wait' => false]);
        $this->assertSame([true, true, false], array_map(static function (Result $x): bool {
            return $x->isQueued();
        }, $r->getResults()));
        $this->assertSame([2, 1], [$r->getQueued(), $r->getFailed()]);
        $rows = self::rows($fake);
        $this->assertCount(2, $rows);
        $this->assertSame([$full], $rows[1][1]['tokens']);
        $this->assertFalse($rows[1][1]['wait']);
        $this->assertSame(1, $client->getStats()['retries']);
    }

    public function testMulticastRetryableTokensAreRetriedAlone(): void
    {
        $fake = $this->fake();
        $slow = self::hook('ee9f', 1);
        $going = self::hook('ee5d', 1, 1);
        $gone = self::tok(3, '0410');
        $r = $this->client($fake)->sendMulticast([self::TOKEN, $slow, $going, $gone], ['alert' => 'x']);
        $oks = array_map(static function (Result $x): bool {
            return $x->isOk();
        }, $r->getResults());
        $this->assertSame([true, true, true, false], $oks);
        $rows = self::rows($fake);
        $this->assertCount(2, $rows);
        $this->assertSame([$slow, $going], $rows[1][1]['tokens']);
        $this->assertSame($rows[0][1]['deadline'], $rows[1][1]['deadline']);
        $this->assertSame([1, 2], array_column($rows, 0), 'shutting_down: a fresh connection');
    }

    public function testMulticastRetryableTokensGiveUpWithTheirLastAnswer(): void
    {
        $fake = $this->fake();
        $stuck = self::hook('ee9f', 9);
        $r = $this->client($fake, ['max_attempts' => 2])->sendMulticast([self::TOKEN, $stuck], ['alert' => 'x']);
        $this->assertSame('queue_full', $r->getResults()[1]->getError());
        $this->assertSame([$stuck], $r->getRetryableTokens());
        $this->assertCount(2, $fake->received());
    }

    public function testMulticastWholeLineRefused(): void
    {
        $fake = $this->fake();
        $r = $this->client($fake)->sendMulticast([self::TOKEN, self::TOKEN], ['alert' => 'x', 'app' => 'nope']);
        $this->assertFalse($r->isOk());
        $this->assertSame('unknown_app', $r->getError());
        $this->assertNotEmpty($r->getMessage());
        $this->assertSame(2, $r->getFailed());
        $this->assertSame('unknown_app', $r->getResults()[1]->getError());
    }

    public function testMulticastEmptyAndBadArguments(): void
    {
        $fake = $this->fake();
        $client = $this->client($fake);
        $r = $client->sendMulticast([], ['alert' => 'x']);
        $this->assertTrue($r->isOk());
        $this->assertCount(0, $r);
        foreach ([[[self::TOKEN, 42], []], [[self::TOKEN], ['colapse_id' => 'typo']], [[self::TOKEN], ['token' => 'x']]] as [$tokens, $options]) {
            try {
                $client->sendMulticast($tokens, $options);
                $this->fail('expected InvalidArgumentException');
            } catch (\InvalidArgumentException $e) {
                $this->assertNotSame('', $e->getMessage());
            }
        }
        $this->assertSame([], $fake->received());
    }

    public function testOlderDaemonMulticastMessage(): void
    {
        $m = new \ReflectionMethod(Client::class, 'batchFailure');
        $m->setAccessible(true);
        $entries = $m->invoke(null, ['id' => 1, 'ok' => false, 'error' => 'bad_request', 'message' => 'unknown field "tokens"', 'retryable' => false], ['aa', 'bb']);
        $this->assertSame(['aa', 'bb'], array_column($entries, 'token'));
        $this->assertStringContainsString('predates multicast', $entries[0]['message']);
    }

    // ---------------------------------------------------------- channels

    public function testChannelCreateGetListSendDelete(): void
    {
        $fake = $this->fake();
        $client = $this->client($fake);
        $scope = ['app' => 'demo', 'env' => 'sandbox'];
        $c = $client->channelCreate('latest', $scope);
        $this->assertInstanceOf(ChannelResult::class, $c);
        $this->assertTrue($c->isOk());
        $id = (string) $c->getChannelId();
        $this->assertNotSame('', $id);
        $req = self::rows($fake)[0][1];
        $this->assertSame(['channel_create', 'latest', 'demo', 'sandbox'], [$req['op'], $req['storage'], $req['app'], $req['env']]);
        $g = $client->channelGet($id, $scope);
        $this->assertSame([$id, 'latest', 'liveactivity'], [$g->getChannelId(), $g->getStorage(), $g->getPushType()]);
        $this->assertSame([$id], $client->channelList($scope)->getChannels());
        $s = $client->sendBroadcast($id, $scope + ['push_type' => 'liveactivity', 'payload' => ['aps' => ['event' => 'update', 'timestamp' => 1, 'content-state' => new \stdClass()]]]);
        $this->assertTrue($s->isOk(), $s->describe());
        $sent = $s->getRaw()['received'];
        $this->assertSame($id, $sent['channel_id']);
        $this->assertArrayNotHasKey('token', $sent);
        $this->assertTrue($client->channelDelete($id, $scope)->isOk());
        $this->assertSame([], $client->channelList($scope)->getChannels());
        $this->assertSame('channel ' . $id, $c->describe());
    }

    public function testChannelRefusalsAreResults(): void
    {
        $fake = $this->fake();
        $client = $this->client($fake);
        $g = $client->channelGet('nope');
        $this->assertFalse($g->isOk());
        $this->assertSame([404, 'ChannelNotFound'], [$g->getStatus(), $g->getReason()]);
        $this->assertSame('BadChannelId', $client->sendBroadcast('nope', ['alert' => 'x'])->getReason());
        $this->assertSame('bad_request', $client->channelCreate('forever')->getError());
    }

    public function testChannelBadArguments(): void
    {
        $fake = $this->fake();
        $client = $this->client($fake);
        $calls = [
            static function () use ($client): void {
                $client->channelGet('');
            },
            static function () use ($client): void {
                $client->channelDelete('x', ['topic' => 't']);
            },
            static function () use ($client): void {
                $client->sendBroadcast('', ['alert' => 'x']);
            },
            static function () use ($client): void {
                $client->channelList(['app' => 3]);
            },
        ];
        foreach ($calls as $call) {
            try {
                $call();
                $this->fail('expected InvalidArgumentException');
            } catch (\InvalidArgumentException $e) {
                $this->assertNotSame('', $e->getMessage());
            }
        }
        $this->assertSame([], $fake->received());
    }

    public function testClientOptionsAreValidated(): void
    {
        foreach ([['max_attempts' => 0], ['retry_backoff' => -1], ['resend_unanswered' => 'yes'], ['max_line_bytes' => 10], ['sleep' => 'nope'], ['retries' => 3]] as $options) {
            try {
                new Client('/x', 1.0, $options);
                $this->fail('expected InvalidArgumentException for ' . json_encode($options));
            } catch (\InvalidArgumentException $e) {
                $this->assertNotSame('', $e->getMessage());
            }
        }
        $this->assertSame(5, (new Client('/x'))->getMaxAttempts());
    }
}
