<?php

declare(strict_types=1);

namespace Apnsd\Tests\Unit;

use Apnsd\Client;
use Apnsd\Exception\ConnectionLostException;
use Apnsd\Exception\DaemonUnreachableException;
use Apnsd\Exception\ProtocolException;
use Apnsd\Exception\TimeoutException;
use Apnsd\Result;
use Apnsd\Tests\FakeDaemon;
use Apnsd\Tests\TestDirs;
use PHPUnit\Framework\TestCase;

/**
 * The client against tests/fake_daemon.php.
 */
final class ClientTest extends TestCase
{
    private const TOKEN = 'a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90';

    /** @var list<FakeDaemon> */
    private $fakes = [];

    /** @var list<string> */
    private $dirs = [];

    protected function tearDown(): void
    {
        foreach ($this->fakes as $fake) {
            $fake->stop();
        }
        foreach ($this->dirs as $dir) {
            TestDirs::remove($dir);
        }
        $this->fakes = [];
        $this->dirs = [];
    }

    /** @param array<string, mixed> $script */
    private function fake(array $script = []): FakeDaemon
    {
        $fake = new FakeDaemon($script);
        $this->fakes[] = $fake;

        return $fake;
    }

    /** @return list<array<string, mixed>> the decoded request lines the fake received */
    private static function requests(FakeDaemon $fake): array
    {
        $out = [];
        foreach ($fake->received() as [$conn, $line]) {
            $out[] = json_decode($line, true);
        }

        return $out;
    }

    public function testSendSuccessAndEveryOptionOnTheWire(): void
    {
        $fake = $this->fake();
        $client = new Client($fake->socketPath, 5.0);
        $expiration = new \DateTimeImmutable('@1900000000');
        $r = $client->send(self::TOKEN, [
            'alert' => ['title' => 'Hi', 'body' => "two\nlines, ünïcödé / \u{1F600}"],
            'badge' => 3,
            'sound' => 'default',
            'payload' => ['aps' => ['thread-id' => 't'], 'custom' => ['a' => 1.0]],
            'app' => 'demo',
            'env' => 'production',
            'wait' => true,
            'topic' => 'com.example.demo',
            'push_type' => 'alert',
            'priority' => 10,
            'expiration' => $expiration,
            'collapse_id' => 'c1',
            'apns_id' => '123e4567-e89b-12d3-a456-426614174000',
        ]);

        $this->assertTrue($r->isOk());
        $this->assertTrue($r->ok);
        $this->assertSame(200, $r->getStatus());
        $this->assertMatchesRegularExpression('/^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$/', (string) $r->getApnsId());
        $this->assertNull($r->getError());
        $this->assertFalse($r->isUnregistered());

        $received = $fake->received();
        $this->assertCount(1, $received, 'one request, one line');
        $req = json_decode($received[0][1], true);
        $this->assertIsInt($req['id']);
        $this->assertSame('send', $req['op']);
        $this->assertSame(self::TOKEN, $req['token']);
        $this->assertSame(['title' => 'Hi', 'body' => "two\nlines, ünïcödé / \u{1F600}"], $req['alert']);
        $this->assertSame(3, $req['badge']);
        $this->assertSame('default', $req['sound']);
        $this->assertSame(['aps' => ['thread-id' => 't'], 'custom' => ['a' => 1.0]], $req['payload']);
        $this->assertStringContainsString('"a":1.0', $received[0][1], 'floats keep their fraction');
        $this->assertSame('demo', $req['app']);
        $this->assertSame('production', $req['env']);
        $this->assertTrue($req['wait']);
        $this->assertSame('com.example.demo', $req['topic']);
        $this->assertSame('alert', $req['push_type']);
        $this->assertSame(10, $req['priority']);
        $this->assertSame(1900000000, $req['expiration']);
        $this->assertSame('c1', $req['collapse_id']);
        $this->assertSame('123e4567-e89b-12d3-a456-426614174000', $req['apns_id']);
        $this->assertEquals($req, $r->getRaw()['received'], 'the raw response is kept');
    }

    public function testFramingIsOneLinePerRequestEndedByNewline(): void
    {
        $fake = $this->fake();
        $client = new Client($fake->socketPath, 5.0);
        $client->send(self::TOKEN, ['alert' => "line1\nline2\r\n\u{2028}end"]);
        $client->ping();
        $raw = file_get_contents($fake->logPath);
        // two log rows = two request lines; the fake logs each line it read with fgets()
        $this->assertSame(2, substr_count($raw, "\n"));
        $rows = $fake->received();
        $ping = json_decode($rows[1][1], true);
        $this->assertSame(['id', 'op', 'deadline'], array_keys($ping));
        $this->assertSame('ping', $ping['op']);
        $this->assertSame("line1\nline2\r\n\u{2028}end", json_decode($rows[0][1], true)['alert']);
        $this->assertSame(1, $rows[1][0], 'the second call reuses the connection');
    }

    public function testNullOptionsAreLeftOutAndEmptyPayloadIsAnObject(): void
    {
        $fake = $this->fake();
        $client = new Client($fake->socketPath, 5.0);
        $client->send(self::TOKEN, ['payload' => [], 'badge' => null, 'app' => null]);
        $line = $fake->received()[0][1];
        $this->assertStringContainsString('"payload":{}', $line);
        $req = json_decode($line, true);
        $this->assertArrayNotHasKey('badge', $req);
        $this->assertArrayNotHasKey('app', $req);
    }

    public function testIosLoggedTokenIsPassedAsIs(): void
    {
        $fake = $this->fake();
        $client = new Client($fake->socketPath, 5.0);
        $token = '<A1B2C3D4 E5F60718 293A4B5C 6D7E8F90 A1B2C3D4 E5F60718 293A4B5C 6D7E8F90>';
        $r = $client->send($token);
        $this->assertTrue($r->isOk());
        $this->assertSame($token, json_decode($fake->received()[0][1], true)['token'], 'the client does not rewrite the token; apnsd cleans it');
    }

    public function testRefusalsAreResultsNotExceptions(): void
    {
        $fake = $this->fake();
        $client = new Client($fake->socketPath, 5.0);

        $gone = $client->send('0410' . substr(self::TOKEN, 4));
        $this->assertFalse($gone->isOk());
        $this->assertSame(410, $gone->getStatus());
        $this->assertSame('Unregistered', $gone->getReason());
        $this->assertTrue($gone->isUnregistered());
        $this->assertSame(1700000000123, $gone->getTimestamp());
        $this->assertSame('2023-11-14T22:13:20.123000+00:00', $gone->getUnregisteredAt()->format('Y-m-d\TH:i:s.uP'));

        $bad = $client->send('0400' . substr(self::TOKEN, 4));
        $this->assertSame(400, $bad->status);
        $this->assertSame('BadDeviceToken', $bad->reason);
        $this->assertFalse($bad->isRetryable());

        $busy = $client->send('0429' . substr(self::TOKEN, 4));
        $this->assertTrue($busy->isRetryable(), '429 is retryable when apnsd does not say');

        $invalid = $client->send('not a token');
        $this->assertFalse($invalid->isOk());
        $this->assertNull($invalid->getStatus());
        $this->assertSame('invalid_token', $invalid->getError());
        $this->assertSame('token is not hex', $invalid->getMessage());
        $this->assertFalse($invalid->isRetryable());

        $queued = $client->send(self::TOKEN, ['wait' => false]);
        $this->assertTrue($queued->isOk());
        $this->assertTrue($queued->isQueued());
        $this->assertNull($queued->getStatus());
    }

    public function testPingStatusReload(): void
    {
        $fake = $this->fake();
        $client = new Client($fake->socketPath, 5.0);
        $pong = $client->ping();
        $this->assertTrue($pong['ok']);
        $this->assertTrue($pong['pong']);
        $this->assertSame('fake-1', $pong['version']);
        $this->assertArrayHasKey('id', $pong);
        $this->assertArrayHasKey('apps', $client->status());
        $this->assertTrue($client->reload()['ok']);
        $ops = array_column(self::requests($fake), 'op');
        $this->assertSame(['ping', 'status', 'reload'], $ops);
    }

    public function testSendManyPipelinesInOrderAndKeepsKeys(): void
    {
        $fake = $this->fake();
        $client = new Client($fake->socketPath, 10.0);
        $prefixes = ['a1b2', '0410', '0400', 'zz'];
        $notifications = [];
        for ($i = 0; $i < 300; $i++) {
            $notifications['user-' . $i] = ['token' => $prefixes[$i % 4] . substr(self::TOKEN, 4), 'badge' => $i];
        }
        $results = $client->sendMany($notifications);

        $this->assertSame(array_keys($notifications), array_keys($results));
        foreach ($results as $key => $r) {
            $i = (int) substr($key, 5);
            $this->assertInstanceOf(Result::class, $r);
            $this->assertSame($i, $r->getRaw()['received']['badge'], "result for $key belongs to $key");
            switch ($i % 4) {
                case 0:
                    $this->assertSame(200, $r->getStatus());
                    break;
                case 1:
                    $this->assertTrue($r->isUnregistered());
                    break;
                case 2:
                    $this->assertSame('BadDeviceToken', $r->getReason());
                    break;
                case 3:
                    $this->assertSame('invalid_token', $r->getError());
                    break;
            }
        }
        $received = $fake->received();
        $this->assertCount(300, $received);
        $this->assertSame([1], array_values(array_unique(array_column($received, 0))), 'all on one connection');
        $ids = array_map(static function (array $row) {
            return json_decode($row[1], true)['id'];
        }, $received);
        $this->assertCount(300, array_unique($ids), 'ids are unique');
        $this->assertSame([], $client->sendMany([]));
    }

    public function testSendManyDoesNotDeadlockWithBigRequestsAndAnswers(): void
    {
        // The fake reads a line, then blocks writing its (padded) answer until
        // the client reads. ~3 MB each way: far more than the socket buffers,
        // so a client that wrote everything before reading would hang.
        $fake = $this->fake(['default' => ['pad' => 2000]]);
        $client = new Client($fake->socketPath, 15.0);
        $notifications = [];
        for ($i = 0; $i < 1500; $i++) {
            $notifications[] = ['token' => self::TOKEN, 'payload' => ['aps' => ['alert' => str_repeat('x', 2000)], 'n' => $i]];
        }
        $start = microtime(true);
        $results = $client->sendMany($notifications);
        $this->assertCount(1500, $results);
        foreach ($results as $i => $r) {
            $this->assertSame($i, $r->getRaw()['received']['payload']['n']);
        }
        $this->assertLessThan(15.0, microtime(true) - $start);
    }

    public function testAnswersSplitIntoBytesWithCrlfAndEmptyLines(): void
    {
        $fake = $this->fake(['default' => ['byte_by_byte' => true, 'crlf' => true]]);
        $client = new Client($fake->socketPath, 5.0);
        $results = $client->sendMany([['token' => self::TOKEN], ['token' => '0410' . substr(self::TOKEN, 4)]]);
        $this->assertSame(200, $results[0]->getStatus());
        $this->assertSame(410, $results[1]->getStatus());
        $this->assertTrue($client->ping()['pong']);
    }

    public function testOutOfOrderAnswersAreAProtocolError(): void
    {
        $fake = $this->fake(['default' => ['reverse' => 3]]);
        $client = new Client($fake->socketPath, 5.0);
        try {
            $client->sendMany([['token' => self::TOKEN], ['token' => self::TOKEN], ['token' => self::TOKEN]]);
            $this->fail('expected a ProtocolException');
        } catch (ProtocolException $e) {
            $this->assertStringContainsString('out of order', $e->getMessage());
            $this->assertSame([], $e->getPartialResults());
        }
    }

    public function testWrongIdIsAProtocolError(): void
    {
        $fake = $this->fake(['default' => ['wrong_id' => true]]);
        $client = new Client($fake->socketPath, 5.0);
        $this->expectException(ProtocolException::class);
        $this->expectExceptionMessageMatches('/id \d+ was due/');
        $client->ping();
    }

    public function testMissingIdIsAProtocolErrorExceptForUnparsableLines(): void
    {
        $fake = $this->fake(['connections' => [['no_id' => true, 'error' => 'line_too_long'], ['no_id' => true]]]);
        $client = new Client($fake->socketPath, 5.0);
        $r = $client->send(self::TOKEN);
        $this->assertSame('line_too_long', $r->getError(), 'apnsd cannot echo the id of a line it could not read');
        $client->close();
        $this->expectException(ProtocolException::class);
        $client->send(self::TOKEN);
    }

    public function testGarbageIsAProtocolErrorAndTheNextCallReconnects(): void
    {
        $fake = $this->fake(['connections' => [['garbage' => 'HTTP/1.1 400 Bad Request']]]);
        $client = new Client($fake->socketPath, 5.0);
        try {
            $client->send(self::TOKEN);
            $this->fail('expected a ProtocolException');
        } catch (ProtocolException $e) {
            $this->assertStringContainsString('not JSON', $e->getMessage());
            $this->assertStringContainsString('HTTP/1.1 400 Bad Request', $e->getMessage());
            $this->assertStringContainsString($fake->socketPath, $e->getMessage());
        }
        $this->assertTrue($client->send(self::TOKEN)->isOk());
        $this->assertSame([1, 2], array_column($fake->received(), 0));
    }

    public function testJsonThatIsNotAnObjectIsAProtocolError(): void
    {
        $fake = $this->fake(['default' => ['garbage' => '[1,2,3]']]);
        $client = new Client($fake->socketPath, 5.0);
        $this->expectException(ProtocolException::class);
        $this->expectExceptionMessage('not a JSON object');
        $client->ping();
    }

    public function testTimeoutClosesTheConnection(): void
    {
        $fake = $this->fake(['connections' => [['answer_n' => 0, 'after' => 'silent']]]);
        $client = new Client($fake->socketPath, 0.3);
        $start = microtime(true);
        try {
            $client->send(self::TOKEN);
            $this->fail('expected a TimeoutException');
        } catch (TimeoutException $e) {
            $this->assertStringContainsString('0 of 1', $e->getMessage());
            $this->assertStringContainsString('will not start sending', $e->getMessage());
        }
        $elapsed = microtime(true) - $start;
        $this->assertGreaterThanOrEqual(0.29, $elapsed);
        $this->assertLessThan(2.0, $elapsed);
        // A late answer on the old connection must not be taken for the next one.
        $this->assertTrue($client->ping()['pong']);
        $this->assertSame([1, 2], array_column($fake->received(), 0));
    }

    public function testTimeoutKeepsPartialResults(): void
    {
        $fake = $this->fake(['connections' => [['answer_n' => 2, 'after' => 'silent']]]);
        $client = new Client($fake->socketPath, 0.3);
        try {
            $client->sendMany(['a' => ['token' => self::TOKEN], 'b' => ['token' => self::TOKEN], 'c' => ['token' => self::TOKEN]]);
            $this->fail('expected a TimeoutException');
        } catch (TimeoutException $e) {
            $this->assertSame(['a', 'b'], array_keys($e->getPartialResults()));
        }
    }

    public function testMissingSocket(): void
    {
        $dir = TestDirs::make('apnsd-php-missing-');
        $this->dirs[] = $dir;
        $path = $dir . '/nothing.sock';
        $client = new Client($path, 1.0);
        try {
            $client->send(self::TOKEN);
            $this->fail('expected a DaemonUnreachableException');
        } catch (DaemonUnreachableException $e) {
            $this->assertSame($path, $e->getSocketPath());
            $this->assertStringContainsString($path, $e->getMessage());
            $this->assertStringContainsString('does not exist', $e->getMessage());
            $this->assertStringContainsString('group', $e->getMessage());
        }
    }

    public function testStaleSocketIsRefused(): void
    {
        $dir = TestDirs::make('apnsd-php-stale-');
        $this->dirs[] = $dir;
        $path = $dir . '/stale.sock';
        $server = stream_socket_server('unix://' . $path);
        fclose($server); // PHP leaves the socket file behind: nobody listens now
        $this->assertFileExists($path);
        $client = new Client($path, 1.0);
        try {
            $client->ping();
            $this->fail('expected a DaemonUnreachableException');
        } catch (DaemonUnreachableException $e) {
            $this->assertStringContainsString($path, $e->getMessage());
            $this->assertStringContainsString('refused', $e->getMessage());
            $this->assertStringContainsString("socket's group", $e->getMessage());
        }
    }

    /**
     * Copies autoload.php and src/ to a new world-readable directory and
     * returns its path (removed at shutdown).
     */
    private static function readableClientCopy(): string
    {
        $root = dirname(__DIR__, 2);
        $dir = sys_get_temp_dir() . '/apnsd-php-client-' . bin2hex(random_bytes(4));
        mkdir($dir, 0755);
        chmod($dir, 0755);
        copy($root . '/autoload.php', $dir . '/autoload.php');
        chmod($dir . '/autoload.php', 0644);
        $it = new \RecursiveIteratorIterator(
            new \RecursiveDirectoryIterator($root . '/src', \FilesystemIterator::SKIP_DOTS),
            \RecursiveIteratorIterator::SELF_FIRST
        );
        mkdir($dir . '/src', 0755);
        chmod($dir . '/src', 0755);
        foreach ($it as $f) {
            $target = $dir . '/src/' . substr($f->getPathname(), strlen($root . '/src/'));
            if ($f->isDir()) {
                mkdir($target, 0755);
                chmod($target, 0755);
            } else {
                copy($f->getPathname(), $target);
                chmod($target, 0644);
            }
        }
        register_shutdown_function(static function () use ($dir): void {
            exec('rm -rf ' . escapeshellarg($dir));
        });
        return $dir;
    }

    public function testPermissionDenied(): void
    {
        $fake = $this->fake();
        if (function_exists('posix_geteuid') && posix_geteuid() !== 0) {
            chmod($fake->socketPath, 0);
            $client = new Client($fake->socketPath, 1.0);
            try {
                $client->ping();
                $this->fail('expected a DaemonUnreachableException');
            } catch (DaemonUnreachableException $e) {
                $class = get_class($e);
                $message = $e->getMessage();
            }
        } else {
            // Root may open any socket: try as "nobody" in a subprocess.
            $setpriv = trim((string) shell_exec('command -v setpriv 2>/dev/null'));
            if ($setpriv === '') {
                $this->markTestSkipped('running as root and setpriv(1) is missing');
            }
            chmod(dirname($fake->socketPath), 0755);
            chmod($fake->socketPath, 0660); // root:root, so nobody gets EACCES
            $code = 'require $argv[1]; try { (new Apnsd\Client($argv[2], 1.0))->ping(); echo json_encode(["none", ""]); }'
                . ' catch (Throwable $e) { echo json_encode([get_class($e), $e->getMessage()]); }';
            // "nobody" may not be able to read this checkout (a clone in a
            // 0700 temp dir): give it a world-readable copy of the client.
            $copy = self::readableClientCopy();
            $cmd = [$setpriv, '--reuid=65534', '--regid=65534', '--clear-groups', PHP_BINARY, '-r', $code,
                $copy . '/autoload.php', $fake->socketPath];
            $proc = proc_open($cmd, [0 => ['file', '/dev/null', 'r'], 1 => ['pipe', 'w'], 2 => ['pipe', 'w']], $pipes);
            $this->assertIsResource($proc);
            $out = stream_get_contents($pipes[1]);
            $err = stream_get_contents($pipes[2]);
            fclose($pipes[1]);
            fclose($pipes[2]);
            proc_close($proc);
            $decoded = json_decode((string) $out, true);
            $this->assertIsArray($decoded, "subprocess output: $out $err");
            [$class, $message] = $decoded;
        }
        $this->assertSame(DaemonUnreachableException::class, $class);
        $this->assertStringContainsString('Permission denied', $message);
        $this->assertStringContainsString($fake->socketPath, $message);
        $this->assertStringContainsString('usermod -aG', $message);
        $this->assertSame([], $fake->received());
    }

    public function testReconnectsOnceWhenTheKeptConnectionWasClosed(): void
    {
        // 1st connection: answer one request, then apnsd "restarts" (closes it).
        $fake = $this->fake(['connections' => [['answer_n' => 1, 'after' => 'close']]]);
        $client = new Client($fake->socketPath, 5.0);
        $this->assertTrue($client->send(self::TOKEN)->isOk());
        usleep(100000); // let the fake close it
        $this->assertTrue($client->send(self::TOKEN)->isOk());
        $this->assertSame([1, 2], array_column($fake->received(), 0), 'the second send went once, on a new connection');
    }

    public function testNeverResendsWhenTheConnectionBreaksAfterWriting(): void
    {
        // The fake reads the notification, then closes without answering:
        // apnsd may have delivered it, so the client must not send it again.
        $fake = $this->fake(['connections' => [['answer_n' => 0, 'after' => 'close_on_next']]]);
        $client = new Client($fake->socketPath, 5.0, ['resend_unanswered' => false]);
        try {
            $client->send(self::TOKEN);
            $this->fail('expected a ConnectionLostException');
        } catch (ConnectionLostException $e) {
            $this->assertStringContainsString('not resent', $e->getMessage());
        }
        $this->assertCount(1, $fake->received(), 'sent exactly once');
        // The client is usable again afterwards.
        $this->assertTrue($client->ping()['ok']);
    }

    public function testBrokenConnectionMidSendManyKeepsPartialResults(): void
    {
        $fake = $this->fake(['connections' => [['answer_n' => 5, 'after' => 'close_on_next']]]);
        $client = new Client($fake->socketPath, 5.0, ['resend_unanswered' => false]);
        $notifications = [];
        for ($i = 0; $i < 10; $i++) {
            $notifications["n$i"] = ['token' => self::TOKEN];
        }
        try {
            $client->sendMany($notifications);
            $this->fail('expected a ConnectionLostException');
        } catch (ConnectionLostException $e) {
            $this->assertStringContainsString('5 of 10', $e->getMessage());
            $this->assertSame(['n0', 'n1', 'n2', 'n3', 'n4'], array_keys($e->getPartialResults()));
            foreach ($e->getPartialResults() as $r) {
                $this->assertTrue($r->isOk());
            }
        }
    }

    public function testBadOptionsAreRejectedBeforeAnythingIsSent(): void
    {
        $fake = $this->fake();
        $client = new Client($fake->socketPath, 5.0);
        $cases = [
            [['collapseId' => 'x'], 'unknown option "collapseId"'],
            [['badge' => '3'], '"badge" must be an int'],
            [['wait' => 'no'], '"wait" must be a bool'],
            [['payload' => ['a', 'b']], 'not a list'],
            [['payload' => 'x'], '"payload" must be'],
            [['token' => self::TOKEN], 'first argument'],
            [['alert' => "\xff"], 'cannot encode'],
        ];
        foreach ($cases as [$options, $message]) {
            try {
                $client->send(self::TOKEN, $options);
                $this->fail('expected InvalidArgumentException for ' . json_encode(array_keys($options)));
            } catch (\InvalidArgumentException $e) {
                $this->assertStringContainsString($message, $e->getMessage());
            }
        }
        try {
            $client->sendMany([['token' => self::TOKEN], ['badge' => 1]]);
            $this->fail('expected InvalidArgumentException');
        } catch (\InvalidArgumentException $e) {
            $this->assertStringContainsString('notification [1] needs a "token"', $e->getMessage());
        }
        $this->assertSame([], $fake->received(), 'nothing was sent');
    }
}
