<?php

declare(strict_types=1);

namespace Apnsd;

use Apnsd\Exception\ApnsdException;
use Apnsd\Exception\ConnectionLostException;
use Apnsd\Exception\DaemonUnreachableException;
use Apnsd\Exception\ProtocolException;
use Apnsd\Exception\TimeoutException;

/**
 * Talks to a local apnsd over its Unix socket (protocol version 1: one JSON
 * object per line, one response line per request line, in request order).
 *
 * The connection is opened on first use and kept for the life of the object
 * (one PHP request, typically); several calls reuse it. A connection found
 * broken before anything is written (apnsd restarted in between) is replaced
 * once, transparently. A connection that breaks after a notification was
 * written is NOT retried, because the notification may already have been
 * delivered and Apple would show it twice: you get a ConnectionLostException.
 *
 * Not safe to share between processes (e.g. across pcntl_fork()).
 */
final class Client
{
    public const DEFAULT_SOCKET = '/run/apnsd/apnsd.sock';

    /** Options of send(); the values are the protocol's field names. */
    private const SEND_OPTIONS = [
        'alert' => true,
        'badge' => true,
        'sound' => true,
        'payload' => true,
        'app' => true,
        'env' => true,
        'wait' => true,
        'topic' => true,
        'push_type' => true,
        'priority' => true,
        'expiration' => true,
        'collapse_id' => true,
        'apns_id' => true,
    ];

    /** Bytes handed to one fwrite() call. */
    private const WRITE_CHUNK = 65536;

    /** Requests written but not yet answered, at most (sendMany). */
    private const MAX_IN_FLIGHT = 1000;

    /** A response line longer than this is treated as a protocol error. */
    private const MAX_RESPONSE_LINE = 16777216;

    /** @var string */
    private $socketPath;

    /** @var float */
    private $timeout;

    /** @var resource|null */
    private $stream;

    /** @var string bytes read but not yet consumed */
    private $readBuffer = '';

    /** @var int */
    private $nextId = 1;

    /**
     * @param string $socketPath apnsd's socket
     * @param float  $timeout    seconds to wait for apnsd to make progress (open the
     *                           connection, accept the request, answer it) before
     *                           giving up with a TimeoutException. With "wait" =>
     *                           true (the default) an answer takes as long as Apple
     *                           takes, so keep this above apnsd's own APNs timeout.
     */
    public function __construct(string $socketPath = self::DEFAULT_SOCKET, float $timeout = 10.0)
    {
        if (!($timeout > 0)) {
            throw new \InvalidArgumentException('timeout must be positive');
        }
        $this->socketPath = $socketPath;
        $this->timeout = $timeout;
    }

    public function __destruct()
    {
        $this->close();
    }

    public function getSocketPath(): string
    {
        return $this->socketPath;
    }

    public function getTimeout(): float
    {
        return $this->timeout;
    }

    /**
     * Sends one notification and returns apnsd's verdict.
     *
     * $token is the device token in hex. The form an iOS app logs
     * ("<a1b2c3d4 e5f6...>", any case) can be passed as is: apnsd strips the
     * brackets and spaces.
     *
     * $options (all optional, protocol field names): alert (string or array),
     * badge (int), sound (string or array), payload (the full APNs payload as an
     * associative array or object; alert/badge/sound are merged into its "aps"),
     * app, env ("sandbox"|"production"), wait (bool, default true), topic,
     * push_type, priority (int), expiration (unix time int or DateTimeInterface),
     * collapse_id, apns_id. A null value means "not given".
     *
     * A refused notification (bad token, unknown app, Apple said no, ...) is a
     * Result with isOk() === false, not an exception.
     *
     * @param array<string, mixed> $options
     *
     * @throws DaemonUnreachableException apnsd's socket cannot be opened; nothing was sent
     * @throws TimeoutException           no answer in time; the notification may still be sent
     * @throws ConnectionLostException    the connection broke; the notification may or may not have been sent
     * @throws ProtocolException          apnsd's answer made no sense
     * @throws \InvalidArgumentException  unknown option or a value of the wrong type; nothing was sent
     */
    public function send(string $token, array $options = []): Result
    {
        if (array_key_exists('token', $options)) {
            throw new \InvalidArgumentException('pass the token as the first argument of send(), not as an option');
        }
        $results = $this->sendMany([['token' => $token] + $options]);

        return $results[0];
    }

    /**
     * Sends many notifications pipelined over one connection and returns one
     * Result per notification, under the same keys and in the same order as
     * $notifications. Each notification is an array with "token" plus any
     * options of send().
     *
     * If the connection fails half-way, the exception's getPartialResults()
     * holds the Results received so far.
     *
     * @param array<array-key, array<string, mixed>> $notifications
     *
     * @return array<array-key, Result>
     *
     * @throws ApnsdException            see send()
     * @throws \InvalidArgumentException see send(); raised before anything is sent
     */
    public function sendMany(array $notifications): array
    {
        $requests = [];
        foreach ($notifications as $key => $notification) {
            if (!is_array($notification)) {
                throw new \InvalidArgumentException(sprintf('notification [%s] must be an array with a "token"', (string) $key));
            }
            $requests[$key] = self::buildSendRequest($notification, (string) $key);
        }
        $results = [];
        foreach ($this->exchange($requests) as $key => $response) {
            $results[$key] = new Result($response);
        }

        return $results;
    }

    /**
     * Asks apnsd whether it is alive: ['ok' => true, 'pong' => true, 'version' => '...'].
     *
     * @return array<string, mixed>
     *
     * @throws ApnsdException
     */
    public function ping(): array
    {
        return $this->call('ping');
    }

    /**
     * apnsd's state per app and environment (connection, credentials and
     * their expiry, queue depth, counters). See PROTOCOL.md, op "status".
     *
     * @return array<string, mixed>
     *
     * @throws ApnsdException
     */
    public function status(): array
    {
        return $this->call('status');
    }

    /**
     * Makes apnsd re-read its credentials now; answers after the attempt with
     * "ok" and any error. A failed reload keeps the old credentials working.
     *
     * @return array<string, mixed>
     *
     * @throws ApnsdException
     */
    public function reload(): array
    {
        return $this->call('reload');
    }

    /** Closes the connection, if open. The next call opens a new one. */
    public function close(): void
    {
        if ($this->stream !== null) {
            if (is_resource($this->stream)) {
                @fclose($this->stream);
            }
            $this->stream = null;
        }
        $this->readBuffer = '';
    }

    /**
     * @return array<string, mixed>
     */
    private function call(string $op): array
    {
        $responses = $this->exchange([0 => ['op' => $op]]);

        return $responses[0];
    }

    /**
     * Checks one notification and turns it into a request object (without id).
     *
     * @param array<string, mixed> $n
     *
     * @return array<string, mixed>
     */
    private static function buildSendRequest(array $n, string $key): array
    {
        $where = sprintf('notification [%s]', $key);
        if (!isset($n['token']) || !is_string($n['token'])) {
            throw new \InvalidArgumentException($where . ' needs a "token" string');
        }
        $request = ['op' => 'send', 'token' => $n['token']];
        foreach ($n as $name => $value) {
            if ($name === 'token') {
                continue;
            }
            if (!is_string($name) || !isset(self::SEND_OPTIONS[$name])) {
                throw new \InvalidArgumentException(sprintf(
                    '%s: unknown option "%s" (known: token, %s)',
                    $where,
                    (string) $name,
                    implode(', ', array_keys(self::SEND_OPTIONS))
                ));
            }
            if ($value === null) {
                continue;
            }
            switch ($name) {
                case 'alert':
                case 'sound':
                    if (!is_string($value) && !is_array($value) && !is_object($value)) {
                        throw self::typeError($where, $name, 'a string or an array', $value);
                    }
                    break;
                case 'badge':
                case 'priority':
                    if (!is_int($value)) {
                        throw self::typeError($where, $name, 'an int', $value);
                    }
                    break;
                case 'expiration':
                    if ($value instanceof \DateTimeInterface) {
                        $value = $value->getTimestamp();
                    } elseif (!is_int($value)) {
                        throw self::typeError($where, $name, 'a unix time (int) or a DateTimeInterface', $value);
                    }
                    break;
                case 'wait':
                    if (!is_bool($value)) {
                        throw self::typeError($where, $name, 'a bool', $value);
                    }
                    break;
                case 'payload':
                    if (is_array($value)) {
                        if ($value === []) {
                            $value = new \stdClass();
                        } elseif (array_keys($value) === range(0, count($value) - 1)) {
                            throw new \InvalidArgumentException($where . ': "payload" must be a JSON object (an associative array), not a list');
                        }
                    } elseif (!is_object($value)) {
                        throw self::typeError($where, $name, 'an associative array or an object', $value);
                    }
                    break;
                default: // app, env, topic, push_type, collapse_id, apns_id
                    if (!is_string($value)) {
                        throw self::typeError($where, $name, 'a string', $value);
                    }
            }
            $request[$name] = $value;
        }

        return $request;
    }

    /** @param mixed $value */
    private static function typeError(string $where, string $name, string $expected, $value): \InvalidArgumentException
    {
        return new \InvalidArgumentException(sprintf('%s: "%s" must be %s, got %s', $where, $name, $expected, gettype($value)));
    }

    /**
     * Writes the requests (adding ids) pipelined on one connection and reads
     * one response per request, in order. Writing and reading are interleaved
     * so that neither side can block the other.
     *
     * @param array<array-key, array<string, mixed>> $requests
     *
     * @return array<array-key, array<string, mixed>> responses, keyed like $requests
     */
    private function exchange(array $requests): array
    {
        if ($requests === []) {
            return [];
        }
        $keys = array_keys($requests);
        $ids = [];
        $lines = [];
        foreach ($keys as $i => $key) {
            $ids[$i] = $this->nextId++;
            $lines[$i] = self::encodeLine(['id' => $ids[$i]] + $requests[$key]);
        }
        $count = count($keys);

        $fresh = $this->ensureConnected();
        $stream = $this->stream;
        $responses = [];
        $queued = 0;    // lines moved into $out
        $answered = 0;  // responses received
        $out = '';      // bytes not yet written
        $bytesWritten = 0;
        $deadline = microtime(true) + $this->timeout;

        while ($answered < $count) {
            while ($queued < $count && strlen($out) < self::WRITE_CHUNK && $queued - $answered < self::MAX_IN_FLIGHT) {
                $out .= $lines[$queued];
                $queued++;
            }

            $remaining = $deadline - microtime(true);
            if ($remaining <= 0) {
                $this->close();
                $e = new TimeoutException(sprintf(
                    'apnsd at %s did not answer within %.1f s (%d of %d answers received); the connection was closed. '
                    . 'A notification without an answer may still be delivered.',
                    $this->socketPath,
                    $this->timeout,
                    $answered,
                    $count
                ));
                $e->setPartialResults($this->partialResults($keys, $responses));
                throw $e;
            }
            $read = [$stream];
            $write = $out !== '' ? [$stream] : [];
            $except = null;
            $seconds = (int) floor($remaining);
            $micros = (int) (($remaining - $seconds) * 1000000);
            $ready = @stream_select($read, $write, $except, $seconds, $micros);
            if ($ready === false) { // interrupted by a signal, most likely
                usleep(1000);
                continue;
            }
            if ($ready === 0) {
                continue; // the deadline check above throws
            }

            // Read first: answers already waiting are worth having even if
            // the connection turns out broken for writing.
            if ($read !== []) {
                $chunk = @fread($stream, 65536);
                if (is_string($chunk) && $chunk !== '') {
                    $this->readBuffer .= $chunk;
                    $deadline = microtime(true) + $this->timeout;
                    while ($answered < $count && ($pos = strpos($this->readBuffer, "\n")) !== false) {
                        $line = substr($this->readBuffer, 0, $pos);
                        $this->readBuffer = (string) substr($this->readBuffer, $pos + 1);
                        if (substr($line, -1) === "\r") {
                            $line = substr($line, 0, -1);
                        }
                        if (trim($line) === '') {
                            continue;
                        }
                        $responses[$answered] = $this->decodeResponse($line, $ids[$answered], $keys, $responses);
                        $answered++;
                    }
                    if ($answered < $count && strlen($this->readBuffer) > self::MAX_RESPONSE_LINE) {
                        $this->close();
                        $e = new ProtocolException(sprintf('apnsd at %s sent a line longer than %d bytes', $this->socketPath, self::MAX_RESPONSE_LINE));
                        $e->setPartialResults($this->partialResults($keys, $responses));
                        throw $e;
                    }
                } elseif (feof($stream)) {
                    if ($bytesWritten === 0 && !$fresh) {
                        // Closed by apnsd while idle, before any byte of ours
                        // reached it: replace the connection once.
                        $this->close();
                        $fresh = $this->ensureConnected();
                        $stream = $this->stream;
                        $queued = 0;
                        $out = '';
                        $deadline = microtime(true) + $this->timeout;
                        continue;
                    }
                    $this->close();
                    $e = new ConnectionLostException(sprintf(
                        'apnsd at %s closed the connection after %d of %d answers (restarted or shutting down?). '
                        . 'Notifications without an answer may or may not have been delivered; they were not resent.',
                        $this->socketPath,
                        $answered,
                        $count
                    ));
                    $e->setPartialResults($this->partialResults($keys, $responses));
                    throw $e;
                }
            }

            if ($write !== [] && $answered < $count) {
                $error = null;
                set_error_handler(static function (int $no, string $msg) use (&$error): bool {
                    $error = $msg;

                    return true;
                });
                try {
                    $n = fwrite($stream, substr($out, 0, self::WRITE_CHUNK));
                } finally {
                    restore_error_handler();
                }
                if ($n === false || ($n === 0 && $error !== null)) {
                    if ($bytesWritten === 0 && !$fresh) {
                        // The kept-alive connection died while idle and nothing
                        // has reached apnsd yet: replace it once and start over.
                        $this->close();
                        $fresh = $this->ensureConnected();
                        $stream = $this->stream;
                        $queued = 0;
                        $out = '';
                        $deadline = microtime(true) + $this->timeout;
                        continue;
                    }
                    $this->close();
                    $e = new ConnectionLostException(sprintf(
                        'writing to apnsd at %s failed after %d of %d answers (%s). '
                        . 'Notifications without an answer may or may not have been delivered; they were not resent.',
                        $this->socketPath,
                        $answered,
                        $count,
                        $error !== null ? $error : 'write error'
                    ));
                    $e->setPartialResults($this->partialResults($keys, $responses));
                    throw $e;
                }
                if ($n > 0) {
                    $bytesWritten += $n;
                    $out = (string) substr($out, $n);
                    $deadline = microtime(true) + $this->timeout;
                }
            }
        }

        $byKey = [];
        foreach ($keys as $i => $key) {
            $byKey[$key] = $responses[$i];
        }

        return $byKey;
    }

    /**
     * @param list<array-key>                 $keys
     * @param array<int, array<string, mixed>> $responses
     *
     * @return array<array-key, Result>
     */
    private function partialResults(array $keys, array $responses): array
    {
        $results = [];
        foreach ($responses as $i => $response) {
            $results[$keys[$i]] = new Result($response);
        }

        return $results;
    }

    /**
     * @param list<array-key>                  $keys
     * @param array<int, array<string, mixed>> $responses
     *
     * @return array<string, mixed>
     */
    private function decodeResponse(string $line, int $expectedId, array $keys, array $responses): array
    {
        $problem = null;
        $decoded = null;
        try {
            $decoded = json_decode($line, true, 512, JSON_THROW_ON_ERROR | JSON_BIGINT_AS_STRING);
            if (!is_array($decoded) || ltrim($line)[0] !== '{') {
                $problem = 'a response that is not a JSON object';
            }
        } catch (\JsonException $e) {
            $problem = 'a response that is not JSON (' . $e->getMessage() . ')';
        }
        if ($problem === null) {
            if (!array_key_exists('id', $decoded) || $decoded['id'] === null) {
                // apnsd cannot echo the id of a line it could not parse.
                $error = $decoded['error'] ?? null;
                if ($error !== 'bad_json' && $error !== 'line_too_long') {
                    $problem = sprintf('a response without the request\'s id %d', $expectedId);
                }
            } elseif ($decoded['id'] !== $expectedId) {
                $problem = sprintf(
                    'the response for id %s where id %d was due (responses out of order?)',
                    json_encode($decoded['id']),
                    $expectedId
                );
            }
        }
        if ($problem !== null) {
            $this->close();
            $snippet = strlen($line) > 200 ? substr($line, 0, 200) . '...' : $line;
            $e = new ProtocolException(sprintf('apnsd at %s sent %s: %s', $this->socketPath, $problem, $snippet));
            $e->setPartialResults($this->partialResults($keys, $responses));
            throw $e;
        }

        return $decoded;
    }

    /** @param array<string, mixed> $request */
    private static function encodeLine(array $request): string
    {
        try {
            $json = json_encode(
                $request,
                JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_PRESERVE_ZERO_FRACTION | JSON_THROW_ON_ERROR
            );
        } catch (\JsonException $e) {
            throw new \InvalidArgumentException('cannot encode the request as JSON: ' . $e->getMessage(), 0, $e);
        }

        // json_encode never emits a raw newline, so this is exactly one line.
        return $json . "\n";
    }

    /**
     * Makes sure there is a usable connection. A kept connection that apnsd
     * has closed (or that holds unexpected data) is replaced.
     *
     * @return bool true when the connection was just opened
     */
    private function ensureConnected(): bool
    {
        if ($this->stream !== null) {
            if ($this->isIdleAndHealthy()) {
                return false;
            }
            $this->close();
        }
        $this->connect();

        return true;
    }

    private function isIdleAndHealthy(): bool
    {
        if (!is_resource($this->stream) || $this->readBuffer !== '') {
            return false;
        }
        $read = [$this->stream];
        $write = null;
        $except = null;
        $ready = @stream_select($read, $write, $except, 0, 0);

        // Readable while idle means EOF (apnsd went away) or stray bytes:
        // either way this connection is not to be trusted.
        return $ready === 0;
    }

    private function connect(): void
    {
        $errno = 0;
        $errstr = '';
        $warning = null;
        set_error_handler(static function (int $no, string $msg) use (&$warning): bool {
            $warning = $msg;

            return true;
        });
        try {
            $stream = stream_socket_client('unix://' . $this->socketPath, $errno, $errstr, $this->timeout, STREAM_CLIENT_CONNECT);
        } finally {
            restore_error_handler();
        }
        if ($stream === false) {
            throw $this->unreachable((int) $errno, (string) ($errstr !== '' ? $errstr : $warning));
        }
        stream_set_blocking($stream, false);
        @stream_set_read_buffer($stream, 0);
        @stream_set_write_buffer($stream, 0);
        $this->stream = $stream;
        $this->readBuffer = '';
    }

    private function unreachable(int $errno, string $errstr): DaemonUnreachableException
    {
        $path = $this->socketPath;
        $user = self::processUser();
        $group = null;
        if (@file_exists($path)) {
            $gid = @filegroup($path);
            if ($gid !== false) {
                $group = (string) $gid;
                if (function_exists('posix_getgrgid')) {
                    $info = @posix_getgrgid($gid);
                    if (is_array($info) && isset($info['name'])) {
                        $group = $info['name'];
                    }
                }
            }
        }
        $groupHint = sprintf(
            'The user PHP runs as (%s) must be allowed to open the socket: add it to the socket\'s group (%s), '
            . 'e.g. `sudo usermod -aG %s %s`, then restart PHP-FPM or the web server.',
            $user !== null ? $user : 'the web server user, e.g. www-data',
            $group !== null ? $group : 'see `ls -l ' . $path . '`',
            $group !== null ? $group : 'GROUP',
            $user !== null ? $user : 'www-data'
        );
        $lower = strtolower($errstr);
        if (strpos($lower, 'permission denied') !== false || $errno === 13) {
            $msg = sprintf('Permission denied opening apnsd\'s socket %s. %s', $path, $groupHint);
        } elseif (strpos($lower, 'no such file') !== false || $errno === 2) {
            $msg = sprintf(
                'apnsd\'s socket %s does not exist: is apnsd running (systemctl status apnsd), and is this its socket path? '
                . 'If it does exist, this process cannot see into its directory. %s',
                $path,
                $groupHint
            );
        } elseif (strpos($lower, 'refused') !== false || $errno === 111 || $errno === 61) {
            $msg = sprintf(
                'Connection refused on apnsd\'s socket %s: the file exists but no apnsd is listening on it (apnsd stopped?). %s',
                $path,
                $groupHint
            );
        } else {
            $msg = sprintf('Cannot connect to apnsd\'s socket %s: %s. %s', $path, $errstr !== '' ? $errstr : 'error ' . $errno, $groupHint);
        }

        return new DaemonUnreachableException($msg, $path, $errno);
    }

    private static function processUser(): ?string
    {
        if (function_exists('posix_geteuid') && function_exists('posix_getpwuid')) {
            $info = @posix_getpwuid(posix_geteuid());
            if (is_array($info) && isset($info['name'])) {
                return $info['name'];
            }
        }

        return null;
    }
}
