<?php

declare(strict_types=1);

namespace Apnsd;

use Apnsd\Exception\ApnsdException;
use Apnsd\Exception\ConnectionLostException;
use Apnsd\Exception\DaemonUnreachableException;
use Apnsd\Exception\ProtocolException;
use Apnsd\Exception\TimeoutException;
use Apnsd\Internal\Pending;

/**
 * Talks to a local apnsd over its Unix socket (protocol version 1.1: one
 * JSON object per line, one response line per request line, in request
 * order).
 *
 * The connection is opened on first use and kept for the life of the object
 * (one PHP request, or a long-running worker); several calls reuse it.
 *
 * Deadlines: every request carries "deadline" = the moment it is written +
 * the timeout, in Unix milliseconds, so apnsd never starts sending a
 * notification the client has given up on (it answers "expired").
 *
 * Retries: an answer with "retryable": true and code shutting_down is
 * retried at once on a fresh connection; queue_full and unavailable after a
 * short jittered backoff. When the connection breaks (EOF, EPIPE,
 * ECONNRESET) with requests written but unanswered, the client reconnects
 * and resends them: delivery is then AT LEAST ONCE, a resent notification
 * may reach the device twice. A request is written at most max_attempts
 * times and never after its deadline. See the README, "Retries and resends".
 *
 * Not safe to share between processes (e.g. across pcntl_fork()).
 */
final class Client
{
    public const DEFAULT_SOCKET = '/run/apnsd/apnsd.sock';

    /** apnsd takes at most this many tokens in one multicast request line. */
    public const MAX_MULTICAST_TOKENS = 1000;

    /**
     * apnsd's default request line limit (socket.max_line_bytes, 128 KiB: a
     * full batch of 1000 64-hex tokens fits); multicast lines are kept below it.
     */
    public const DEFAULT_LINE_LIMIT = 131072;

    /** Codes (answered "retryable": true) retried at once, on a fresh connection. */
    public const RETRY_AT_ONCE = ['shutting_down'];

    /** Codes (answered "retryable": true) retried after a short jittered backoff. */
    public const RETRY_WITH_BACKOFF = ['queue_full', 'unavailable'];

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

    /** Options of the constructor, with their defaults. */
    private const CLIENT_OPTIONS = [
        'max_attempts' => 5,
        'retry_backoff' => 0.05,
        'resend_unanswered' => true,
        'send_deadline' => true,
        'max_line_bytes' => self::DEFAULT_LINE_LIMIT,
        'sleep' => null,
        'log' => null,
    ];

    /** The longest single backoff sleep, in seconds. */
    private const BACKOFF_CAP = 1.0;

    /** Room left in a multicast line for the id and deadline the client adds. */
    private const LINE_RESERVE = 96;

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

    /** @var int */
    private $maxAttempts;

    /** @var float */
    private $retryBackoff;

    /** @var bool */
    private $resendUnanswered;

    /** @var bool */
    private $sendDeadline;

    /** @var int */
    private $maxLineBytes;

    /** @var callable(float): void */
    private $sleep;

    /** @var callable(string): void */
    private $log;

    /** @var resource|null */
    private $stream;

    /** @var string bytes read but not yet consumed */
    private $readBuffer = '';

    /** @var int */
    private $nextId = 1;

    /**
     * Does the apnsd behind the current connection take "deadline"? Assumed
     * until it refuses the field; asked again on each new connection.
     *
     * @var bool
     */
    private $deadlineOk = true;

    /** @var bool */
    private $warnedDeadline = false;

    /** @var array{connects: int, retries: int, resends: int} */
    private $stats = ['connects' => 0, 'retries' => 0, 'resends' => 0];

    /**
     * @param string $socketPath apnsd's socket
     * @param float  $timeout    seconds the caller is willing to wait for one request's
     *                           verdict, retries included (and, for a pipeline, for apnsd
     *                           to make progress). With "wait" => true (the default) an
     *                           answer takes as long as Apple takes, so keep this above
     *                           apnsd's own APNs timeout.
     * @param array<string, mixed> $options
     *        max_attempts (int, default 5): how often a request may be written; 1 turns
     *            retries and resends off.
     *        retry_backoff (float, default 0.05): first backoff in seconds for queue_full
     *            and unavailable; doubles on each retry, at most 1 s, jittered (50-100 %).
     *        resend_unanswered (bool, default true): resend what a broken connection left
     *            unanswered (at least once); false: throw ConnectionLostException instead.
     *        send_deadline (bool, default true): put "deadline" on every request.
     *        max_line_bytes (int, default 131072): apnsd's socket.max_line_bytes, if changed.
     *        sleep (callable(float $seconds): void): replaces usleep() for the backoff
     *            (for tests).
     *        log (callable(string $message): void): where the client's rare warnings go
     *            (default error_log()); it never throws or triggers PHP errors itself.
     */
    public function __construct(string $socketPath = self::DEFAULT_SOCKET, float $timeout = 10.0, array $options = [])
    {
        if (!($timeout > 0)) {
            throw new \InvalidArgumentException('timeout must be positive');
        }
        $unknown = array_diff(array_keys($options), array_keys(self::CLIENT_OPTIONS));
        if ($unknown !== []) {
            throw new \InvalidArgumentException(sprintf(
                'unknown client option(s) %s (known: %s)',
                implode(', ', $unknown),
                implode(', ', array_keys(self::CLIENT_OPTIONS))
            ));
        }
        $o = $options + self::CLIENT_OPTIONS;
        if (!is_int($o['max_attempts']) || $o['max_attempts'] < 1) {
            throw new \InvalidArgumentException('max_attempts must be an int >= 1');
        }
        if (!is_int($o['retry_backoff']) && !is_float($o['retry_backoff']) || $o['retry_backoff'] < 0) {
            throw new \InvalidArgumentException('retry_backoff must be a number >= 0');
        }
        if (!is_bool($o['resend_unanswered']) || !is_bool($o['send_deadline'])) {
            throw new \InvalidArgumentException('resend_unanswered and send_deadline must be bools');
        }
        if (!is_int($o['max_line_bytes']) || $o['max_line_bytes'] < 1024) {
            throw new \InvalidArgumentException('max_line_bytes must be an int >= 1024');
        }
        if ($o['sleep'] !== null && !is_callable($o['sleep']) || $o['log'] !== null && !is_callable($o['log'])) {
            throw new \InvalidArgumentException('sleep and log must be callables');
        }
        $this->socketPath = $socketPath;
        $this->timeout = $timeout;
        $this->maxAttempts = $o['max_attempts'];
        $this->retryBackoff = (float) $o['retry_backoff'];
        $this->resendUnanswered = $o['resend_unanswered'];
        $this->sendDeadline = $o['send_deadline'];
        $this->maxLineBytes = $o['max_line_bytes'];
        $this->sleep = $o['sleep'] ?? static function (float $seconds): void {
            usleep((int) round($seconds * 1000000));
        };
        $this->log = $o['log'] ?? static function (string $message): void {
            error_log('apnsd client: ' . $message);
        };
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

    public function getMaxAttempts(): int
    {
        return $this->maxAttempts;
    }

    /**
     * Counters since the client was made: connects (connections opened),
     * retries (retryable answers retried), resends (requests resent after a
     * broken connection).
     *
     * @return array{connects: int, retries: int, resends: int}
     */
    public function getStats(): array
    {
        return $this->stats;
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
     * @throws TimeoutException           no verdict within the timeout; apnsd will not start sending it
     * @throws ConnectionLostException    the connection broke and the request could not be resent;
     *                                    it may or may not have been sent
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
     * options of send(). Retries and resends apply as for send().
     *
     * If the exchange fails, the exception's getPartialResults() holds the
     * Results received (final ones only), under their keys.
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
            if (!isset($notification['token']) || !is_string($notification['token'])) {
                throw new \InvalidArgumentException(sprintf('notification [%s] needs a "token" string', (string) $key));
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
     * Sends one notification to many device tokens (multicast). Up to 1000
     * tokens go in one request line (fewer when the line would pass
     * max_line_bytes, apnsd's line limit, 128 KiB by default); a longer list is split into several pipelined lines,
     * transparently. $options are those of send().
     *
     * The MulticastResult has one Result per token in the order given
     * (getResults(), or iterate it), getSent()/getFailed() counts and helpers
     * such as getUnregisteredTokens() (the tokens, as you passed them, to
     * delete). A malformed token fails its own entry (invalid_token), never
     * the batch. With "wait" => false each token's Result is queued (isQueued():
     * apnsd has it on disk) or apnsd's refusal of that token (e.g.
     * invalid_token), and getQueued() counts the queued ones. Tokens whose
     * own entry is a retryable refusal (shutting_down, queue_full,
     * unavailable) are retried alone. An empty $tokens asks apnsd nothing.
     *
     * @param iterable<array-key, string> $tokens
     * @param array<string, mixed>        $options
     *
     * @throws ApnsdException            see send()
     * @throws \InvalidArgumentException see send()
     */
    public function sendMulticast(iterable $tokens, array $options = []): MulticastResult
    {
        if (array_key_exists('token', $options) || array_key_exists('tokens', $options)) {
            throw new \InvalidArgumentException('pass the tokens as the first argument of sendMulticast()');
        }
        $given = [];
        foreach ($tokens as $key => $token) {
            if (!is_string($token)) {
                throw new \InvalidArgumentException(sprintf('token [%s] must be a string, got %s', (string) $key, gettype($token)));
            }
            $given[] = $token;
        }
        $base = self::buildSendRequest(['tokens' => []] + $options, 'multicast');
        unset($base['tokens']);
        if ($given === []) {
            return new MulticastResult([], []);
        }
        $wait = !isset($base['wait']) || $base['wait'] !== false;
        $chunks = $this->multicastChunks($base, $given);
        $pending = [];
        foreach ($chunks as $i => $chunk) {
            $pending[$i] = new Pending($base + ['tokens' => $chunk]);
        }
        $this->run($pending, array_keys($pending));
        $raw = [];
        foreach ($pending as $p) {
            $raw[] = $p->response;
        }
        $perBatch = [];
        foreach ($pending as $i => $p) {
            $perBatch[$i] = $this->multicastEntries($p->response, $chunks[$i], $wait);
        }
        $this->retryMulticastEntries($base, $pending, $chunks, $perBatch, $wait);
        $entries = [];
        $queued = 0;
        foreach ($perBatch as $batch) {
            foreach ($batch as $e) {
                $entries[] = $e;
                if (!$wait && ($e['ok'] ?? null) === true && ($e['queued'] ?? null) === true) {
                    ++$queued;
                }
            }
        }

        return new MulticastResult($given, $entries, $queued, $raw);
    }

    /**
     * Sends one notification to a broadcast channel (iOS 18 broadcast push,
     * push type liveactivity). $options are those of send().
     *
     * @param array<string, mixed> $options
     *
     * @throws ApnsdException see send()
     */
    public function sendBroadcast(string $channelId, array $options = []): Result
    {
        if ($channelId === '') {
            throw new \InvalidArgumentException('channel id must not be empty');
        }
        if (array_key_exists('token', $options) || array_key_exists('channel_id', $options)) {
            throw new \InvalidArgumentException('pass the channel id as the first argument of sendBroadcast()');
        }
        $request = self::buildSendRequest(['channel_id' => $channelId] + $options, 'broadcast');

        return new Result($this->exchange([0 => $request])[0]);
    }

    /**
     * Creates a broadcast channel for the app and environment ($options:
     * app, env). $storage is Apple's message storage policy: "none" or
     * "latest". The ChannelResult has getChannelId(). Not resent after a
     * broken connection (a second create would make a second channel).
     *
     * @param array<string, mixed> $options
     *
     * @throws ApnsdException see send()
     */
    public function channelCreate(string $storage = 'none', array $options = []): ChannelResult
    {
        $request = ['op' => 'channel_create', 'storage' => $storage] + self::scope($options);

        return new ChannelResult($this->exchange([0 => $request], false)[0]);
    }

    /**
     * A channel's settings: getChannelId(), getStorage(), getPushType().
     *
     * @param array<string, mixed> $options app, env
     */
    public function channelGet(string $channelId, array $options = []): ChannelResult
    {
        return new ChannelResult($this->exchange([0 => ['op' => 'channel_get', 'channel_id' => self::channelId($channelId)] + self::scope($options)])[0]);
    }

    /**
     * The app's channels in that environment: getChannels().
     *
     * @param array<string, mixed> $options app, env
     */
    public function channelList(array $options = []): ChannelResult
    {
        return new ChannelResult($this->exchange([0 => ['op' => 'channel_list'] + self::scope($options)])[0]);
    }

    /**
     * Deletes a channel.
     *
     * @param array<string, mixed> $options app, env
     */
    public function channelDelete(string $channelId, array $options = []): ChannelResult
    {
        return new ChannelResult($this->exchange([0 => ['op' => 'channel_delete', 'channel_id' => self::channelId($channelId)] + self::scope($options)])[0]);
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
     * @param array<string, mixed> $options
     *
     * @return array<string, string>
     */
    private static function scope(array $options): array
    {
        $out = [];
        foreach ($options as $name => $value) {
            if ($name !== 'app' && $name !== 'env') {
                throw new \InvalidArgumentException(sprintf('unknown channel option "%s" (known: app, env)', (string) $name));
            }
            if ($value === null) {
                continue;
            }
            if (!is_string($value)) {
                throw self::typeError('channel op', (string) $name, 'a string', $value);
            }
            $out[$name] = $value;
        }

        return $out;
    }

    private static function channelId(string $channelId): string
    {
        if ($channelId === '') {
            throw new \InvalidArgumentException('channel id must not be empty');
        }

        return $channelId;
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
        $request = ['op' => 'send'];
        foreach (['token', 'tokens', 'channel_id'] as $target) {
            if (array_key_exists($target, $n)) {
                $request[$target] = $n[$target];
            }
        }
        foreach ($n as $name => $value) {
            if ($name === 'token' || $name === 'tokens' || $name === 'channel_id') {
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
     * Splits the tokens into lines of at most MAX_MULTICAST_TOKENS tokens and
     * max_line_bytes bytes each.
     *
     * @param array<string, mixed> $base
     * @param list<string>         $tokens
     *
     * @return list<list<string>>
     */
    private function multicastChunks(array $base, array $tokens): array
    {
        $budget = $this->maxLineBytes - self::LINE_RESERVE - strlen(self::encodeLine($base + ['tokens' => []]));
        $chunks = [];
        $chunk = [];
        $size = 0;
        foreach ($tokens as $t) {
            $cost = strlen((string) json_encode($t, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE)) + 1; // and its comma
            if ($chunk !== [] && (count($chunk) >= self::MAX_MULTICAST_TOKENS || $size + $cost > $budget)) {
                $chunks[] = $chunk;
                $chunk = [];
                $size = 0;
            }
            $chunk[] = $t;
            $size += $cost;
        }
        if ($chunk !== []) {
            $chunks[] = $chunk;
        }

        return $chunks;
    }

    /**
     * The per-token entries of one multicast answer (one per token of
     * $chunk). An answer without "results" is, with $wait false and "ok"
     * true ({"ok":true,"queued":N}), every token queued; else the whole line
     * refused: that refusal for each token. An answer with "results" (also
     * with $wait false when apnsd refused some tokens:
     * {"ok":false,"queued":N,"results":[..]}) gives each token its own
     * entry, queued or refused. Throws ProtocolException (and closes the
     * connection) when "results" does not match $chunk.
     *
     * @param array<string, mixed> $resp
     * @param list<string>         $chunk
     *
     * @return list<array<string, mixed>>
     */
    private function multicastEntries(array $resp, array $chunk, bool $wait = true): array
    {
        if (!array_key_exists('results', $resp)) {
            if (!$wait && ($resp['ok'] ?? null) === true) {
                $out = [];
                foreach ($chunk as $t) {
                    $out[] = ['token' => $t, 'ok' => true, 'queued' => true];
                }

                return $out;
            }

            return self::batchFailure($resp, $chunk);
        }
        $results = $resp['results'];
        $valid = is_array($results) && count($results) === count($chunk) && array_keys($results) === range(0, count($chunk) - 1);
        if ($valid) {
            foreach ($results as $e) {
                if (!is_array($e)) {
                    $valid = false;
                }
            }
        }
        if (!$valid) {
            $this->close();
            throw new ProtocolException(sprintf(
                'apnsd at %s answered a multicast of %d token(s) with %s result(s)',
                $this->socketPath,
                count($chunk),
                is_array($results) ? (string) count($results) : 'malformed'
            ));
        }

        return array_values($results);
    }

    /**
     * @param array<string, mixed> $resp
     * @param list<string>         $chunk
     *
     * @return list<array<string, mixed>>
     */
    private static function batchFailure(array $resp, array $chunk): array
    {
        $entry = $resp;
        unset($entry['id'], $entry['sent'], $entry['failed'], $entry['results']);
        $entry['ok'] = false;
        $message = (string) ($entry['message'] ?? '');
        if (($entry['error'] ?? null) === 'bad_request' && strpos($message, 'unknown field "tokens"') !== false) {
            $entry['message'] = $message . ' (this apnsd predates multicast, protocol 1.1: upgrade it, or use sendMany())';
        }
        $out = [];
        foreach ($chunk as $t) {
            $out[] = ['token' => $t] + $entry;
        }

        return $out;
    }

    /**
     * Resends, as smaller multicasts, the tokens whose own entry is a
     * retryable refusal, until they get a final entry or their line's
     * attempts or deadline run out (the last refusal then stands).
     *
     * @param array<string, mixed>                   $base
     * @param array<int, Pending>                    $pending
     * @param list<list<string>>                     $chunks
     * @param array<int, list<array<string, mixed>>> $perBatch
     */
    private function retryMulticastEntries(array $base, array $pending, array $chunks, array &$perBatch, bool $wait = true): void
    {
        while (true) {
            $retry = [];
            $atOnce = false;
            $longest = 0;
            foreach ($perBatch as $b => $entries) {
                $parent = $pending[$b];
                if (!$this->mayRetry($parent)) {
                    continue;
                }
                $positions = [];
                foreach ($entries as $i => $e) {
                    $kind = self::retryKind($e);
                    if ($kind !== null) {
                        $positions[] = $i;
                        $atOnce = $atOnce || $kind === 'at_once';
                    }
                }
                if ($positions !== []) {
                    $retry[$b] = $positions;
                    $longest = max($longest, $parent->attempts);
                }
            }
            if ($retry === []) {
                return;
            }
            foreach ($retry as $positions) {
                $this->stats['retries'] += count($positions);
            }
            if (!$atOnce) {
                $parents = [];
                foreach (array_keys($retry) as $b) {
                    $parents[] = $pending[$b];
                }
                $this->sleepBackoff($longest, $parents);
                foreach (array_keys($retry) as $b) {
                    if (!$this->mayRetry($pending[$b])) {
                        unset($retry[$b]);
                    }
                }
                if ($retry === []) {
                    return;
                }
            }
            $subs = [];
            $subChunks = [];
            foreach ($retry as $b => $positions) {
                $subChunk = [];
                foreach ($positions as $i) {
                    $subChunk[] = $chunks[$b][$i];
                }
                $parent = $pending[$b];
                $subs[$b] = new Pending($base + ['tokens' => $subChunk], true, $parent->deadline, $parent->deadlineMs, $parent->attempts);
                $subChunks[$b] = $subChunk;
            }
            $this->run($subs, array_keys($subs), $atOnce);
            foreach ($retry as $b => $positions) {
                $pending[$b]->attempts = $subs[$b]->attempts;
                $fresh = $this->multicastEntries($subs[$b]->response, $subChunks[$b], $wait);
                foreach ($positions as $j => $i) {
                    $perBatch[$b][$i] = $fresh[$j];
                }
            }
        }
    }

    /**
     * "at_once", "backoff" or null for one answer (or multicast entry).
     *
     * @param array<string, mixed> $obj
     */
    private static function retryKind(array $obj): ?string
    {
        if (($obj['ok'] ?? null) !== false || ($obj['retryable'] ?? null) !== true) {
            return null;
        }
        $code = $obj['error'] ?? null;
        if (in_array($code, self::RETRY_AT_ONCE, true)) {
            return 'at_once';
        }
        if (in_array($code, self::RETRY_WITH_BACKOFF, true)) {
            return 'backoff';
        }

        return null;
    }

    /**
     * Writes the requests pipelined on one connection and returns their
     * final responses, keyed like $requests. See run().
     *
     * @param array<array-key, array<string, mixed>> $requests
     *
     * @return array<array-key, array<string, mixed>>
     */
    private function exchange(array $requests, bool $resend = true): array
    {
        if ($requests === []) {
            return [];
        }
        $pending = [];
        foreach ($requests as $key => $request) {
            $pending[$key] = new Pending($request, $resend);
        }
        $this->run($pending, array_keys($pending));
        $out = [];
        foreach ($pending as $key => $p) {
            $out[$key] = $p->response;
        }

        return $out;
    }

    /**
     * Gets a final response for every request (sets ->response), retrying
     * and resending as the class doc says.
     *
     * Rounds: each round writes the requests still without a final answer
     * (in order, pipelined) on one connection and reads their answers. After
     * a round, a shutting_down answer or a broken connection means a fresh
     * connection and the next round at once; queue_full/unavailable answers
     * alone mean a jittered sleep first. Once a restart was seen, failing to
     * connect (socket missing or refusing while apnsd restarts) is retried
     * with backoff until the requests' deadlines; before that it is thrown
     * at once (apnsd is simply not running).
     *
     * @param array<array-key, Pending> $pending
     * @param list<array-key>           $keys    order of $pending
     *
     * @throws ApnsdException with the final results so far; the connection is then closed
     */
    private function run(array $pending, array $keys, bool $fresh = false): void
    {
        if ($fresh) {
            $this->close();
        }
        $restarting = $fresh;
        $stalls = 0;
        try {
            while (true) {
                $batch = [];
                foreach ($keys as $key) {
                    if ($pending[$key]->response === null) {
                        $batch[] = $pending[$key];
                    }
                }
                if ($batch === []) {
                    return;
                }
                try {
                    $this->ensureConnected();
                } catch (DaemonUnreachableException $e) {
                    if (!$restarting || $e->getCode() === 13) {
                        throw $e;
                    }
                    $stalls++;
                    if (!$this->sleepBackoff($stalls, $batch, false)) {
                        throw $e;
                    }
                    continue;
                }
                $round = $this->pump($batch);
                $stalls = $round['progress'] ? 0 : $stalls + 1;
                if ($round['broken'] !== null || $round['shutting_down']) {
                    $this->close();
                    $restarting = true;
                }
                $waiting = [];
                foreach ($batch as $p) {
                    if ($p->response === null) {
                        $waiting[] = $p;
                    }
                }
                if ($round['broken'] !== null) {
                    $this->afterBreak($pending, $keys, $batch, $round, $stalls);
                    if (!$round['progress'] && $waiting !== []) {
                        $this->sleepBackoff($stalls, $waiting, false);
                    }
                } elseif ($round['backoff'] && !$round['shutting_down'] && $waiting !== []) {
                    $most = 0;
                    foreach ($waiting as $p) {
                        $most = max($most, $p->attempts);
                    }
                    $this->sleepBackoff($most, $waiting);
                }
                foreach ($keys as $key) {
                    $p = $pending[$key];
                    if ($p->response === null && $p->last !== null && !$this->mayRetry($p)) {
                        $p->response = $p->last;
                    }
                }
            }
        } catch (\Throwable $e) {
            $this->close();
            if ($e instanceof ApnsdException && $e->getPartialResults() === []) {
                $e->setPartialResults(self::finalResults($pending, $keys));
            }
            throw $e;
        }
    }

    /**
     * @param array<array-key, Pending> $pending
     * @param list<array-key>           $keys
     *
     * @return array<array-key, Result>
     */
    private static function finalResults(array $pending, array $keys): array
    {
        $out = [];
        foreach ($keys as $key) {
            if ($pending[$key]->response !== null) {
                $out[$key] = new Result($pending[$key]->response);
            }
        }

        return $out;
    }

    /**
     * The connection broke during a round: may the requests written but
     * unanswered be resent? Throws ConnectionLostException if not.
     *
     * @param array<array-key, Pending> $pending
     * @param list<array-key>           $keys
     * @param list<Pending>             $batch
     * @param array<string, mixed>      $round
     */
    private function afterBreak(array $pending, array $keys, array $batch, array $round, int $stalls): void
    {
        $lost = [];
        foreach ($batch as $p) {
            if ($p->response === null && isset($round['written'][$p->id])) {
                $p->last = null; // an earlier retryable answer no longer stands
                $lost[] = $p;
            }
        }
        $stuck = [];
        foreach ($lost as $p) {
            if (!($p->resend && $this->resendUnanswered && $this->mayRetry($p))) {
                $stuck[] = $p;
            }
        }
        if ($stalls > $this->maxAttempts + 1) {
            $stuck = [];
            foreach ($batch as $p) {
                if ($p->response === null) {
                    $stuck[] = $p;
                }
            }
        }
        if ($stuck === []) {
            $this->stats['resends'] += count($lost);

            return;
        }
        $answered = 0;
        foreach ($keys as $key) {
            if ($pending[$key]->response !== null) {
                $answered++;
            }
        }
        $notResendable = !$this->resendUnanswered;
        $most = 0;
        foreach ($stuck as $p) {
            $notResendable = $notResendable || !$p->resend;
            $most = max($most, $p->attempts);
        }
        $e = new ConnectionLostException(sprintf(
            'the connection to apnsd at %s broke (%s) with %d of %d answers received. '
            . 'Notifications without an answer may or may not have been delivered; %s',
            $this->socketPath,
            $round['broken'],
            $answered,
            count($keys),
            $notResendable ? 'they were not resent.' : sprintf('they could not be resent (%d attempt(s) or the timeout used up).', $most)
        ));
        $e->setPartialResults(self::finalResults($pending, $keys));
        throw $e;
    }

    private function mayRetry(Pending $p): bool
    {
        if ($p->attempts >= $this->maxAttempts) {
            return false;
        }
        $left = $p->timeLeft();

        return $left === null || $left > 0;
    }

    /**
     * Sleeps a jittered backoff (retry_backoff * 2^(attempt-1), at most 1 s,
     * 50-100 % of it), never past the latest deadline among $waiting.
     * Returns false when there is no time left.
     *
     * @param list<Pending> $waiting
     */
    private function sleepBackoff(int $attempt, array $waiting, bool $needsAll = true): bool
    {
        $delay = min(self::BACKOFF_CAP, $this->retryBackoff * (2 ** max(0, $attempt - 1)));
        $delay *= 0.5 + mt_rand() / mt_getrandmax() * 0.5;
        $budget = null;
        foreach ($waiting as $p) {
            $left = $p->timeLeft();
            if ($left !== null) {
                $budget = $budget === null ? $left : max($budget, $left);
            }
        }
        if ($budget !== null) {
            if ($budget <= 0) {
                return false;
            }
            $delay = min($delay, $budget);
        }
        ($this->sleep)($delay);

        return true;
    }

    /**
     * Encodes the next attempt of $p: a new id; the deadline set on the
     * first attempt and kept for the others.
     */
    private function lineFor(Pending $p): string
    {
        if ($p->deadline === null) {
            $p->deadline = microtime(true) + $this->timeout;
            $p->deadlineMs = (int) floor((microtime(true) + $this->timeout) * 1000);
        }
        $p->id = $this->nextId++;
        $obj = ['id' => $p->id] + $p->obj;
        if ($this->sendDeadline && $this->deadlineOk && !array_key_exists('deadline', $obj)) {
            $obj['deadline'] = $p->deadlineMs;
        }
        $p->attempts++;

        return self::encodeLine($obj);
    }

    /**
     * One round: writes the requests of $batch (encoded lazily, so each
     * deadline starts when its line is written) and reads their answers,
     * interleaved so that neither side can block the other. Classifies each
     * answer (final, retry at once, retry after backoff).
     *
     * @param list<Pending> $batch
     *
     * @return array{broken: ?string, written: array<int, true>, shutting_down: bool, backoff: bool, progress: bool}
     *
     * @throws TimeoutException|ProtocolException|DaemonUnreachableException
     */
    private function pump(array $batch): array
    {
        $round = ['broken' => null, 'written' => [], 'shutting_down' => false, 'backoff' => false, 'progress' => false];
        $stream = $this->stream;
        $count = count($batch);
        $out = '';
        $ends = [];     // end offset of each encoded line in this round's byte stream
        $sent = 0;
        $next = 0;      // next request of $batch to encode
        $answered = 0;
        $stop = false;  // shutting_down seen: write no further lines
        $lastProgress = microtime(true);

        while (true) {
            while (!$stop && $next < $count && strlen($out) < self::WRITE_CHUNK && $next - $answered < self::MAX_IN_FLIGHT) {
                $line = $this->lineFor($batch[$next]);
                $out .= $line;
                $ends[] = ($ends === [] ? 0 : $ends[count($ends) - 1]) + strlen($line);
                $next++;
            }
            $expected = $stop ? count($ends) : $count;
            if ($answered >= $expected) {
                break;
            }
            $now = microtime(true);
            $wait = $lastProgress + $this->timeout - $now;
            if ($stop || $next === $count) {
                $latest = null;
                for ($i = $answered, $n = count($ends); $i < $n; $i++) {
                    $d = $batch[$i]->deadline;
                    if ($d !== null) {
                        $latest = $latest === null ? $d : max($latest, $d);
                    }
                }
                if ($latest !== null) {
                    $wait = min($wait, $latest - $now);
                }
            }
            $wait = max(0.0, $wait);
            $read = [$stream];
            $write = $out !== '' ? [$stream] : [];
            $except = null;
            $seconds = (int) floor($wait);
            $micros = (int) (($wait - $seconds) * 1000000);
            $ready = @stream_select($read, $write, $except, $seconds, $micros);
            if ($ready === false) { // interrupted by a signal, most likely
                usleep(1000);
                continue;
            }
            if ($ready === 0) {
                throw new TimeoutException(sprintf(
                    'apnsd at %s did not answer within the %.1f s timeout (%d of %d answers of this round received); '
                    . 'the connection was closed. The unanswered requests are past their deadline, so apnsd will not start sending them.',
                    $this->socketPath,
                    $this->timeout,
                    $answered,
                    $count
                ));
            }

            // Read first: answers already waiting are worth having even if
            // the connection turns out broken for writing.
            if ($read !== []) {
                $chunk = @fread($stream, 65536);
                if (is_string($chunk) && $chunk !== '') {
                    $this->readBuffer .= $chunk;
                    $lastProgress = microtime(true);
                    $round['progress'] = true;
                    $limit = count($ends);
                    while ($answered < $limit && ($pos = strpos($this->readBuffer, "\n")) !== false) {
                        $line = substr($this->readBuffer, 0, $pos);
                        $this->readBuffer = (string) substr($this->readBuffer, $pos + 1);
                        if (substr($line, -1) === "\r") {
                            $line = substr($line, 0, -1);
                        }
                        if (trim($line) === '') {
                            continue;
                        }
                        $response = $this->decodeResponse($line, $batch[$answered]->id);
                        if ($this->classify($batch[$answered], $response, $round) && !$stop) {
                            $stop = true;
                            // Finish the line being written, drop the rest.
                            $keep = 0;
                            while ($keep < count($ends) && ($keep === 0 ? 0 : $ends[$keep - 1]) < $sent) {
                                $keep++;
                            }
                            $keep = max($keep, $answered + 1);
                            for ($i = $keep, $n = count($ends); $i < $n; $i++) {
                                $batch[$i]->attempts--; // never written
                            }
                            $ends = array_slice($ends, 0, $keep);
                            $out = (string) substr($out, 0, max(0, $ends[$keep - 1] - $sent));
                            $next = count($ends);
                        }
                        $answered++;
                    }
                    if ($answered < count($ends) && strlen($this->readBuffer) > self::MAX_RESPONSE_LINE) {
                        throw new ProtocolException(sprintf('apnsd at %s sent a line longer than %d bytes', $this->socketPath, self::MAX_RESPONSE_LINE));
                    }
                } elseif (feof($stream)) {
                    return self::broken($round, $batch, $ends, $sent, $answered, 'apnsd closed the connection: restarted or shutting down?');
                }
            }

            if ($write !== [] && $out !== '') {
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
                    return self::broken($round, $batch, $ends, $sent, $answered, $error !== null ? $error : 'write error');
                }
                if ($n > 0) {
                    $sent += $n;
                    $out = (string) substr($out, $n);
                    $lastProgress = microtime(true);
                    $round['progress'] = true;
                }
            }
        }
        if (!$stop && trim($this->readBuffer) !== '') {
            // More lines than requests: the connection is out of step.
            $this->close();
        }

        return $round;
    }

    /**
     * The round ended with a broken connection. Lines not (partly) written
     * do not count as attempts.
     *
     * @param array<string, mixed> $round
     * @param list<Pending>        $batch
     * @param list<int>            $ends
     *
     * @return array<string, mixed>
     */
    private static function broken(array $round, array $batch, array $ends, int $sent, int $answered, string $cause): array
    {
        $round['broken'] = $cause;
        for ($i = $answered, $n = count($ends); $i < $n; $i++) {
            $start = $i === 0 ? 0 : $ends[$i - 1];
            if ($start < $sent) {
                $round['written'][$batch[$i]->id] = true;
            } else {
                $batch[$i]->attempts--;
            }
        }

        return $round;
    }

    /**
     * Records $response as $p's answer or as a reason to retry it. Returns
     * true for shutting_down (stop writing; fresh connection).
     *
     * @param array<string, mixed> $response
     * @param array<string, mixed> $round
     */
    private function classify(Pending $p, array $response, array &$round): bool
    {
        if (($response['error'] ?? null) === 'bad_request'
            && strpos((string) ($response['message'] ?? ''), 'unknown field "deadline"') !== false
            && !array_key_exists('deadline', $p->obj)) {
            // An apnsd older than protocol 1.1 refused the line: nothing was
            // sent. Resend without the field on this connection.
            if (!$this->warnedDeadline) {
                $this->warnedDeadline = true;
                ($this->log)(sprintf(
                    'apnsd at %s does not take the "deadline" field (older than protocol 1.1); requests go without it, '
                    . 'so a request the client gave up on may still be sent',
                    $this->socketPath
                ));
            }
            $this->deadlineOk = false;
            $p->attempts--;

            return false;
        }
        $kind = self::retryKind($response);
        if ($kind !== null && $this->mayRetry($p)) {
            $p->last = $response;
            $this->stats['retries']++;
            if ($kind === 'at_once') {
                $round['shutting_down'] = true;

                return true;
            }
            $round['backoff'] = true;

            return false;
        }
        $p->response = $response;
        $p->last = null;

        return false;
    }

    /**
     * @return array<string, mixed>
     */
    private function decodeResponse(string $line, int $expectedId): array
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
            $snippet = strlen($line) > 200 ? substr($line, 0, 200) . '...' : $line;
            throw new ProtocolException(sprintf('apnsd at %s sent %s: %s', $this->socketPath, $problem, $snippet));
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
        $this->deadlineOk = true;
        $this->stats['connects']++;
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
