<?php

declare(strict_types=1);

namespace Apnsd;

/**
 * The verdict on one notification, as apnsd reported it.
 *
 * Three shapes, told apart by isOk(), getStatus() and getError():
 *  - delivered:          ok, status 200, apnsId
 *  - refused by Apple:   !ok, status (400, 403, 410, 429, 500, ...), reason, apnsId,
 *                        timestamp (ms) for 410 Unregistered
 *  - refused by apnsd:   !ok, error ("invalid_token", "unknown_app", ...), message, retryable
 * With "wait" => false a successful answer only means "queued": ok, isQueued().
 *
 * Values can be read with the getters or as read-only properties
 * ($result->ok, ->status, ->reason, ->apnsId, ->timestamp, ->error, ->message,
 * ->retryable, ->queued, ->raw).
 *
 * @property-read bool        $ok
 * @property-read int|null    $status
 * @property-read string|null $reason
 * @property-read string|null $apnsId
 * @property-read int|null    $timestamp
 * @property-read string|null $error
 * @property-read string|null $message
 * @property-read bool        $retryable
 * @property-read bool        $queued
 * @property-read array       $raw
 * @property-read string|null $token   for one entry of a multicast: the cleaned token
 */
class Result
{
    /** APNs statuses worth retrying later when apnsd does not say otherwise. */
    private const RETRYABLE_STATUSES = [429, 500, 503];

    /** @var bool */
    private $ok;
    /** @var int|null */
    private $status;
    /** @var string|null */
    private $reason;
    /** @var string|null */
    private $apnsId;
    /** @var int|null */
    private $timestamp;
    /** @var string|null */
    private $error;
    /** @var string|null */
    private $message;
    /** @var bool */
    private $retryable;
    /** @var bool */
    private $queued;
    /** @var array<string, mixed> */
    private $raw;

    /**
     * @param array<string, mixed> $raw one decoded response line from apnsd
     */
    public function __construct(array $raw)
    {
        $this->raw = $raw;
        $this->ok = isset($raw['ok']) && $raw['ok'] === true;
        $this->status = self::intOrNull($raw['status'] ?? null);
        $this->reason = self::stringOrNull($raw['reason'] ?? null);
        $this->apnsId = self::stringOrNull($raw['apns_id'] ?? null);
        $this->timestamp = self::intOrNull($raw['timestamp'] ?? null);
        $this->error = self::stringOrNull($raw['error'] ?? null);
        $this->message = self::stringOrNull($raw['message'] ?? null);
        $this->queued = isset($raw['queued']) && $raw['queued'] === true;
        if (isset($raw['retryable']) && is_bool($raw['retryable'])) {
            $this->retryable = $raw['retryable'];
        } else {
            $this->retryable = !$this->ok && $this->status !== null
                && in_array($this->status, self::RETRYABLE_STATUSES, true);
        }
    }

    /** @param array<string, mixed> $raw */
    public static function fromResponse(array $raw): self
    {
        return new self($raw);
    }

    /** True when Apple accepted the notification (or, with wait=false, apnsd queued it). */
    public function isOk(): bool
    {
        return $this->ok;
    }

    /** Apple's HTTP status, or null when Apple was not asked (apnsd error, queued). */
    public function getStatus(): ?int
    {
        return $this->status;
    }

    /** Apple's reason ("BadDeviceToken", "Unregistered", ...) when Apple refused. */
    public function getReason(): ?string
    {
        return $this->reason;
    }

    /** The apns-id (a UUID) of the notification, when Apple answered. */
    public function getApnsId(): ?string
    {
        return $this->apnsId;
    }

    /** For 410 Unregistered: when Apple last knew the token valid, in milliseconds since the epoch. */
    public function getTimestamp(): ?int
    {
        return $this->timestamp;
    }

    /** apnsd's error code ("invalid_token", "unknown_app", "payload_too_large", "unavailable", ...). */
    public function getError(): ?string
    {
        return $this->error;
    }

    /** apnsd's human-readable explanation of getError(). */
    public function getMessage(): ?string
    {
        return $this->message;
    }

    /**
     * Whether sending the same notification again later may succeed. As apnsd
     * says; when apnsd does not say (a verdict from Apple), true for 429, 500
     * and 503.
     */
    public function isRetryable(): bool
    {
        return $this->retryable;
    }

    /** True for a wait=false send that apnsd accepted into its queue (no verdict yet). */
    public function isQueued(): bool
    {
        return $this->queued;
    }

    /**
     * Apple says the token is no longer valid for the topic (HTTP 410): stop
     * sending to it, and forget it unless the app registered it again after
     * getUnregisteredAt().
     */
    public function isUnregistered(): bool
    {
        return $this->status === 410;
    }

    /** getTimestamp() as a date, or null. */
    public function getUnregisteredAt(): ?\DateTimeImmutable
    {
        if ($this->timestamp === null) {
            return null;
        }
        $seconds = intdiv($this->timestamp, 1000);
        $micros = ($this->timestamp % 1000) * 1000;
        $date = \DateTimeImmutable::createFromFormat('U u', sprintf('%d %06d', $seconds, $micros), new \DateTimeZone('UTC'));

        return $date === false ? null : $date;
    }

    /** @return array<string, mixed> the response exactly as apnsd sent it (decoded) */
    public function getRaw(): array
    {
        return $this->raw;
    }

    /** For one entry of a multicast: the token as apnsd cleaned it (hex); null otherwise. */
    public function getToken(): ?string
    {
        return self::stringOrNull($this->raw['token'] ?? null);
    }

    /** A one-line summary for logs, e.g. "410 Unregistered" or "invalid_token: ...". */
    public function describe(): string
    {
        if ($this->error !== null) {
            return $this->error . ($this->message !== null ? ': ' . $this->message : '');
        }
        if ($this->queued && $this->status === null) {
            return 'queued';
        }
        $s = $this->status !== null ? (string) $this->status : ($this->ok ? 'ok' : 'failed');
        if ($this->reason !== null) {
            $s .= ' ' . $this->reason;
        }
        if ($this->apnsId !== null) {
            $s .= ' (apns-id ' . $this->apnsId . ')';
        }

        return $s;
    }

    public function __toString(): string
    {
        return $this->describe();
    }

    /**
     * Read-only property access.
     *
     * @return mixed
     */
    public function __get(string $name)
    {
        switch ($name) {
            case 'ok':
            case 'status':
            case 'reason':
            case 'apnsId':
            case 'timestamp':
            case 'error':
            case 'message':
            case 'retryable':
            case 'queued':
            case 'raw':
                return $this->$name;
            case 'token':
                return $this->getToken();
        }
        throw new \LogicException(sprintf('%s has no property "%s"', static::class, $name));
    }

    public function __isset(string $name): bool
    {
        if ($name === 'token') {
            return $this->getToken() !== null;
        }

        return in_array($name, ['ok', 'status', 'reason', 'apnsId', 'timestamp', 'error', 'message', 'retryable', 'queued', 'raw'], true)
            && $this->$name !== null;
    }

    /** @param mixed $value */
    public function __set(string $name, $value): void
    {
        throw new \LogicException('Apnsd\Result is read-only');
    }

    /** @param mixed $v */
    protected static function intOrNull($v): ?int
    {
        if (is_int($v)) {
            return $v;
        }
        if (is_float($v) || (is_string($v) && is_numeric($v))) {
            return (int) $v;
        }

        return null;
    }

    /** @param mixed $v */
    protected static function stringOrNull($v): ?string
    {
        return is_string($v) ? $v : null;
    }
}
