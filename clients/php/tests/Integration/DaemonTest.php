<?php

declare(strict_types=1);

namespace Apnsd\Tests\Integration;

use Apnsd\Client;
use Apnsd\Exception\ApnsdException;
use Apnsd\Result;
use Apnsd\Tests\TestDirs;
use PHPUnit\Framework\TestCase;

/**
 * The client against the real daemon in demo mode (`apnsd -demo -socket PATH`):
 * local APNs stand-ins that answer by the token's first four hex digits
 * (0410 -> 410 Unregistered, 0400 -> 400 BadDeviceToken, 0403, 0429, 0500,
 * 0503; anything else 200), one app "demo" with topic "com.example.demo".
 *
 * The binary is $APNSD_BIN, or <repo>/bin/apnsd (build it with
 * `cd <repo> && go build -o bin/apnsd ./cmd/apnsd`). A missing binary fails
 * every test here; it is not a skip.
 */
final class DaemonTest extends TestCase
{
    private const OK_TOKEN = 'a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90';
    private const UUID = '/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i';

    /** @var resource|null */
    private static $process;
    /** @var string|null */
    private static $dir;
    /** @var string */
    private static $socket = '';
    /** @var string */
    private static $log = '';
    /** @var string */
    private static $bin = '';
    /** @var string|null why the daemon is not available */
    private static $startError;

    public static function setUpBeforeClass(): void
    {
        self::$startError = null;
        $repo = dirname(__DIR__, 4);
        $bin = getenv('APNSD_BIN');
        if ($bin === false || $bin === '') {
            $bin = $repo . '/bin/apnsd';
        }
        if (!is_file($bin) || !is_executable($bin)) {
            self::$startError = sprintf(
                'apnsd binary not found at %s: build it with `cd %s && go build -o bin/apnsd ./cmd/apnsd`, or set APNSD_BIN',
                $bin,
                $repo
            );

            return;
        }
        self::$bin = $bin;
        self::$dir = TestDirs::make('apnsd-php-it-');
        self::$socket = self::$dir . '/apnsd.sock';
        self::$log = self::$dir . '/apnsd.log';
        self::$startError = self::startDaemon();
    }

    /** Starts `apnsd -demo` and waits until it answers a ping; returns an error or null. */
    private static function startDaemon(): ?string
    {
        $bin = self::$bin;
        $pipes = [];
        $process = proc_open(
            [$bin, '-demo', '-socket', self::$socket],
            [0 => ['file', '/dev/null', 'r'], 1 => ['file', self::$log, 'a'], 2 => ['redirect', 1]],
            $pipes
        );
        if (!is_resource($process)) {
            return "cannot start $bin";
        }
        self::$process = $process;

        $deadline = microtime(true) + 20.0;
        $lastError = 'no answer';
        while (microtime(true) < $deadline) {
            $state = proc_get_status($process);
            if (!$state['running']) {
                self::$process = null;
                proc_close($process);

                return sprintf(
                    '%s -demo exited with code %d before it was ready; its output:%s%s',
                    $bin,
                    $state['exitcode'],
                    PHP_EOL,
                    (string) @file_get_contents(self::$log)
                );
            }
            if (file_exists(self::$socket)) {
                try {
                    $pong = (new Client(self::$socket, 2.0, ['log' => static function (string $m): void {
                    }]))->ping();
                    if (($pong['ok'] ?? null) === true && ($pong['pong'] ?? null) === true) {
                        return null;
                    }
                    $lastError = 'ping answered ' . json_encode($pong);
                } catch (ApnsdException $e) {
                    $lastError = $e->getMessage();
                }
            }
            usleep(100000);
        }

        return sprintf(
            '%s -demo was not ready within 20 s (%s); its output:%s%s',
            $bin,
            $lastError,
            PHP_EOL,
            (string) @file_get_contents(self::$log)
        );
    }

    /** SIGTERM, then SIGKILL after 10 s. */
    private static function stopDaemon(): void
    {
        if (self::$process === null) {
            return;
        }
        proc_terminate(self::$process, 15); // SIGTERM: graceful shutdown
        $deadline = microtime(true) + 10.0;
        while (microtime(true) < $deadline && proc_get_status(self::$process)['running']) {
            usleep(50000);
        }
        if (proc_get_status(self::$process)['running']) {
            proc_terminate(self::$process, 9);
        }
        proc_close(self::$process);
        self::$process = null;
    }

    public static function tearDownAfterClass(): void
    {
        self::stopDaemon();
        if (self::$dir !== null) {
            TestDirs::remove(self::$dir);
            self::$dir = null;
        }
    }

    protected function setUp(): void
    {
        if (self::$startError !== null) {
            $this->fail(self::$startError);
        }
    }

    private function client(float $timeout = 10.0): Client
    {
        // The daemon of this branch may not take "deadline" yet: keep its
        // one-line warning out of the test output.
        return new Client(self::$socket, $timeout, ['log' => static function (string $m): void {
        }]);
    }

    private static function token(string $prefix): string
    {
        return $prefix . substr(self::OK_TOKEN, strlen($prefix));
    }

    public function testPing(): void
    {
        $pong = $this->client()->ping();
        $this->assertTrue($pong['ok']);
        $this->assertTrue($pong['pong']);
        $this->assertIsString($pong['version'] ?? null);
    }

    public function testStatus(): void
    {
        $status = $this->client()->status();
        $this->assertTrue($status['ok']);
        $this->assertStringContainsString('"demo"', json_encode($status), 'status mentions the demo app');
    }

    public function testReload(): void
    {
        $reload = $this->client()->reload();
        $this->assertArrayHasKey('ok', $reload);
        $this->assertTrue($reload['ok'], 'reloading the demo credentials works: ' . json_encode($reload));
        $this->assertTrue($this->client()->send(self::OK_TOKEN, ['alert' => 'after reload'])->isOk());
    }

    public function testSuccessfulSend(): void
    {
        $r = $this->client()->send(self::OK_TOKEN, ['alert' => 'Hello from PHP', 'badge' => 1, 'sound' => 'default']);
        $this->assertTrue($r->isOk(), $r->describe());
        $this->assertSame(200, $r->getStatus());
        $this->assertMatchesRegularExpression(self::UUID, (string) $r->getApnsId());
        $this->assertNull($r->getError());
        $this->assertFalse($r->isUnregistered());
    }

    public function testSendWithEveryOption(): void
    {
        $r = $this->client()->send(self::OK_TOKEN, [
            'payload' => ['aps' => ['alert' => ['title' => 'T', 'body' => 'B']], 'order' => 42],
            'app' => 'demo',
            'env' => 'production',
            'topic' => 'com.example.demo',
            'push_type' => 'alert',
            'priority' => 10,
            'expiration' => time() + 3600,
            'collapse_id' => 'php-test',
            'apns_id' => '123e4567-e89b-12d3-a456-426614174000',
        ]);
        $this->assertTrue($r->isOk(), $r->describe());
        $this->assertSame(200, $r->getStatus());
        $this->assertSame('123e4567-e89b-12d3-a456-426614174000', strtolower((string) $r->getApnsId()));
    }

    public function testUnregistered(): void
    {
        $before = (int) (microtime(true) * 1000);
        $r = $this->client()->send(self::token('0410'), ['alert' => 'gone?']);
        $this->assertFalse($r->isOk());
        $this->assertSame(410, $r->getStatus());
        $this->assertSame('Unregistered', $r->getReason());
        $this->assertTrue($r->isUnregistered());
        $this->assertIsInt($r->getTimestamp());
        $this->assertGreaterThan($before - 86400000, $r->getTimestamp(), 'timestamp is in milliseconds');
        $this->assertLessThan($before + 86400000, $r->getTimestamp());
        $this->assertMatchesRegularExpression(self::UUID, (string) $r->getApnsId());
    }

    public function testBadDeviceToken(): void
    {
        $r = $this->client()->send(self::token('0400'), ['alert' => 'x']);
        $this->assertFalse($r->isOk());
        $this->assertSame(400, $r->getStatus());
        $this->assertSame('BadDeviceToken', $r->getReason());
        $this->assertFalse($r->isUnregistered());
    }

    public function testInvalidToken(): void
    {
        $r = $this->client()->send('this is not hex', ['alert' => 'x']);
        $this->assertFalse($r->isOk());
        $this->assertSame('invalid_token', $r->getError());
        $this->assertNotEmpty($r->getMessage());
        $this->assertFalse($r->isRetryable());
        $this->assertNull($r->getStatus());

        $odd = $this->client()->send('abc', ['alert' => 'x']);
        $this->assertSame('invalid_token', $odd->getError(), 'an odd number of hex digits');
    }

    public function testUnknownApp(): void
    {
        $r = $this->client()->send(self::OK_TOKEN, ['alert' => 'x', 'app' => 'no-such-app']);
        $this->assertFalse($r->isOk());
        $this->assertSame('unknown_app', $r->getError());
        $this->assertNotEmpty($r->getMessage());
    }

    public function testPayloadTooLarge(): void
    {
        $r = $this->client()->send(self::OK_TOKEN, ['alert' => str_repeat('x', 5000)]);
        $this->assertFalse($r->isOk());
        $this->assertSame('payload_too_large', $r->getError());
        $this->assertFalse($r->isRetryable());
    }

    public function testSameKeyAsShorthandAndInPayloadIsBadRequest(): void
    {
        $r = $this->client()->send(self::OK_TOKEN, ['alert' => 'a', 'payload' => ['aps' => ['alert' => 'b']]]);
        $this->assertSame('bad_request', $r->getError());
    }

    public function testIosLoggedTokenForm(): void
    {
        $client = $this->client();
        $logged = '<' . implode(' ', str_split(strtoupper(self::OK_TOKEN), 8)) . '>';
        $r = $client->send($logged, ['alert' => 'bracketed']);
        $this->assertTrue($r->isOk(), $r->describe());
        $this->assertSame(200, $r->getStatus());

        $gone = $client->send('<' . implode(' ', str_split(self::token('0410'), 8)) . '>', ['alert' => 'x']);
        $this->assertTrue($gone->isUnregistered(), 'the cleaned token reaches APNs: ' . $gone->describe());
    }

    public function testWaitFalseIsQueued(): void
    {
        $r = $this->client()->send(self::OK_TOKEN, ['alert' => 'fire and forget', 'wait' => false]);
        $this->assertTrue($r->isOk(), $r->describe());
        $this->assertTrue($r->isQueued());
        $this->assertNull($r->getStatus());
    }

    public function testSendManyMixedInOrder(): void
    {
        $kinds = ['ok', '0410', '0400', '0403', '0429', '0500', '0503', 'invalid', 'unknown_app', 'ok-bracketed'];
        $notifications = [];
        $expected = [];
        for ($i = 0; $i < 200; $i++) {
            $kind = $kinds[$i % count($kinds)];
            $n = ['alert' => "n$i", 'payload' => ['aps' => ['badge' => $i]]];
            switch ($kind) {
                case 'ok':
                    $n['token'] = self::OK_TOKEN;
                    break;
                case 'ok-bracketed':
                    $n['token'] = '<' . implode(' ', str_split(self::OK_TOKEN, 8)) . '>';
                    break;
                case 'invalid':
                    $n['token'] = 'xyz' . $i;
                    break;
                case 'unknown_app':
                    $n['token'] = self::OK_TOKEN;
                    $n['app'] = 'nope';
                    break;
                default:
                    $n['token'] = self::token($kind);
            }
            $notifications["k$i"] = $n;
            $expected["k$i"] = $kind;
        }
        $results = $this->client(60.0)->sendMany($notifications);
        $this->assertSame(array_keys($notifications), array_keys($results));
        foreach ($results as $key => $r) {
            $this->assertInstanceOf(Result::class, $r);
            $kind = $expected[$key];
            $what = "$key ($kind): " . $r->describe();
            switch ($kind) {
                case 'ok':
                case 'ok-bracketed':
                    $this->assertTrue($r->isOk(), $what);
                    $this->assertSame(200, $r->getStatus(), $what);
                    break;
                case '0410':
                    $this->assertTrue($r->isUnregistered(), $what);
                    $this->assertNotNull($r->getTimestamp(), $what);
                    break;
                case '0400':
                    $this->assertSame('BadDeviceToken', $r->getReason(), $what);
                    break;
                case '0403':
                    $this->assertSame(403, $r->getStatus(), $what);
                    break;
                case '0429':
                case '0500':
                case '0503':
                    // apnsd may retry these itself; either way the answer is a refusal.
                    $this->assertFalse($r->isOk(), $what);
                    $this->assertTrue($r->getStatus() === (int) substr($kind, 1) || $r->getError() !== null, $what);
                    break;
                case 'invalid':
                    $this->assertSame('invalid_token', $r->getError(), $what);
                    break;
                case 'unknown_app':
                    $this->assertSame('unknown_app', $r->getError(), $what);
                    break;
            }
        }
    }

    public function testConnectionIsReusedAcrossCalls(): void
    {
        $client = $this->client();
        for ($i = 0; $i < 5; $i++) {
            $this->assertTrue($client->ping()['pong']);
            $this->assertTrue($client->send(self::OK_TOKEN, ['alert' => "again $i"])->isOk());
        }
    }

    public function testLineTooLongKeepsTheConnectionUsable(): void
    {
        $client = $this->client();
        $r = $client->send(self::OK_TOKEN, ['payload' => ['aps' => ['alert' => 'x'], 'blob' => str_repeat('x', 140000)]]); // over the default max_line_bytes (128 KiB)
        $this->assertFalse($r->isOk());
        $this->assertSame('line_too_long', $r->getError(), $r->describe());
        $this->assertTrue($client->ping()['pong'], 'same connection still works');
        $this->assertTrue($client->send(self::OK_TOKEN, ['alert' => 'after a long line'])->isOk());
    }

    public function testMulticastMixedResultsInOrderWithCounts(): void
    {
        $tokens = [self::OK_TOKEN, self::token('0410'), self::token('0400'), 'not-a-token', self::token('a1b2')];
        $r = $this->client()->sendMulticast($tokens, ['alert' => 'hi all']);
        $this->assertFalse($r->isOk(), $r->describe());
        $this->assertSame(2, $r->getSent(), $r->describe());
        $this->assertSame(3, $r->getFailed(), $r->describe());
        $results = $r->getResults();
        $this->assertCount(5, $results);
        $this->assertSame(200, $results[0]->getStatus());
        $this->assertMatchesRegularExpression(self::UUID, (string) $results[0]->getApnsId());
        $this->assertSame(410, $results[1]->getStatus());
        $this->assertTrue($results[1]->isUnregistered());
        $this->assertSame('BadDeviceToken', $results[2]->getReason());
        $this->assertSame('invalid_token', $results[3]->getError());
        $this->assertTrue($results[4]->isOk());
        $this->assertSame([self::token('0410')], $r->getUnregisteredTokens());
        $raw = $r->getRaw();
        $this->assertCount(1, $raw, 'five tokens go in one multicast line');
        $this->assertSame(2, $raw[0]['sent']);
        $this->assertSame(3, $raw[0]['failed']);
    }

    public function testMulticast2500TokensThroughTheRealLineLimit(): void
    {
        $tokens = [];
        for ($i = 0; $i < 2500; $i++) {
            $tokens[] = 'a1b2' . str_pad(dechex($i), 60, '0', STR_PAD_LEFT);
        }
        $r = $this->client(30.0)->sendMulticast($tokens, ['alert' => 'many']);
        $this->assertTrue($r->isOk(), $r->describe());
        $this->assertSame(2500, $r->getSent());
        // apnsd's default max_line_bytes (128 KiB) takes 1000 tokens of 64
        // hex digits, and so does the client's default: three lines.
        $counts = [];
        foreach ($r->getRaw() as $line) {
            $this->assertTrue($line['ok'], json_encode($line));
            $counts[] = count($line['results']);
        }
        $this->assertSame([1000, 1000, 500], $counts);
        $this->assertSame($tokens, $r->getTokens());
    }

    public function testMulticastLongTokensAreSplitByBytes(): void
    {
        // 1000 tokens of 200 hex digits would make a line over apnsd's
        // 128 KiB: the client splits by bytes and apnsd takes every line.
        $tokens = [];
        for ($i = 0; $i < 1500; $i++) {
            $tokens[] = 'a1b2' . str_pad(dechex($i), 196, '0', STR_PAD_LEFT);
        }
        $r = $this->client(30.0)->sendMulticast($tokens, ['alert' => 'long']);
        $this->assertTrue($r->isOk(), $r->describe());
        $this->assertSame([1500, 0], [$r->getSent(), $r->getFailed()]);
        $this->assertGreaterThanOrEqual(3, count($r->getRaw()), '2 would do by count alone');
        $this->assertSame($tokens, array_map(static function (Result $x): ?string {
            return $x->getToken();
        }, $r->getResults()));
    }

    public function testMulticastWaitFalseQueuedCount(): void
    {
        $tokens = [];
        for ($i = 0; $i < 7; $i++) {
            $tokens[] = self::token('a1b2');
        }
        $r = $this->client()->sendMulticast($tokens, ['alert' => 'queued', 'wait' => false]);
        $this->assertTrue($r->isOk(), $r->describe());
        $this->assertSame(7, $r->getQueued());
        $this->assertSame([0, 0], [$r->getSent(), $r->getFailed()]);
        $this->assertSame(7, $r->getRaw()[0]['queued']);
    }

    public function testMulticastWaitFalseWithAnInvalidToken(): void
    {
        // apnsd queues the good tokens and refuses the bad one in its own
        // entry: {"ok":false,"queued":2,"failed":1,"results":[..]}.
        $r = $this->client()->sendMulticast(['aa', 'zz', self::OK_TOKEN], ['alert' => 'x', 'wait' => false]);
        $raw = $r->getRaw()[0];
        $this->assertFalse($raw['ok'], json_encode($raw));
        $this->assertSame([2, 1, 3], [$raw['queued'], $raw['failed'], count($raw['results'])], json_encode($raw));
        $this->assertFalse($r->isOk());
        $this->assertSame([2, 0, 1], [$r->getQueued(), $r->getSent(), $r->getFailed()]);
        $results = $r->getResults();
        $this->assertSame([true, false, true], array_map(static function (Result $x): bool {
            return $x->isQueued();
        }, $results));
        $this->assertSame('invalid_token', $results[1]->getError());
        $this->assertFalse($results[1]->isRetryable());
        $this->assertStringContainsString('tokens[1]', (string) $results[1]->getMessage());
        $this->assertSame(['zz'], $r->getFailedTokens());
        $this->assertSame(['aa', self::OK_TOKEN], $r->getSucceededTokens());
        $this->assertSame(self::OK_TOKEN, $results[2]->getToken());
        $this->assertNull($r->getError());
    }

    public function testMulticastWaitFalseOnlyInvalidTokens(): void
    {
        $r = $this->client()->sendMulticast(['zz', 'abc'], ['alert' => 'x', 'wait' => false]);
        $this->assertFalse($r->isOk());
        $this->assertSame([0, 2], [$r->getQueued(), $r->getFailed()], json_encode($r->getRaw()));
        $this->assertSame(['invalid_token', 'invalid_token'], [$r->getResults()[0]->getError(), $r->getResults()[1]->getError()]);
    }

    public function testChannelsAndBroadcast(): void
    {
        $client = $this->client();
        $created = $client->channelCreate('latest');
        $this->assertTrue($created->isOk(), $created->describe());
        $id = (string) $created->getChannelId();
        $this->assertNotSame('', $id);
        $got = $client->channelGet($id);
        $this->assertTrue($got->isOk(), $got->describe());
        $this->assertSame($id, $got->getChannelId());
        $this->assertSame('latest', $got->getStorage());
        $this->assertSame('liveactivity', strtolower((string) $got->getPushType()));
        $this->assertContains($id, $client->channelList()->getChannels());
        $payload = ['aps' => ['event' => 'update', 'timestamp' => time(), 'content-state' => ['score' => '1-0']]];
        $sent = $client->sendBroadcast($id, ['payload' => $payload, 'priority' => 5]);
        $this->assertTrue($sent->isOk(), $sent->describe());
        $this->assertSame(200, $sent->getStatus());
        $deleted = $client->channelDelete($id);
        $this->assertTrue($deleted->isOk(), $deleted->describe());
        $this->assertNotContains($id, $client->channelList()->getChannels());
        $again = $client->sendBroadcast($id, ['payload' => $payload]);
        $this->assertFalse($again->isOk());
        $this->assertSame('ChannelNotRegistered', $again->getReason(), $again->describe());
    }

    /** Runs last: restarts the daemon under a client that keeps its connection. */
    public function testReconnectsOnceAfterTheDaemonRestarted(): void
    {
        $client = $this->client();
        $this->assertTrue($client->send(self::OK_TOKEN, ['alert' => 'before restart'])->isOk());
        self::stopDaemon();
        $error = self::startDaemon();
        if ($error !== null) {
            self::$startError = $error;
            $this->fail($error);
        }
        $r = $client->send(self::OK_TOKEN, ['alert' => 'after restart']);
        $this->assertTrue($r->isOk(), $r->describe());
    }
}
