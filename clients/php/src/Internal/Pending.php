<?php

declare(strict_types=1);

namespace Apnsd\Internal;

/**
 * One request line's state across attempts.
 *
 * $deadline (microtime) and $deadlineMs (Unix milliseconds, on the wire)
 * are set when the line is first encoded and kept for every resend, so
 * that retries never outlive the caller's timeout.
 *
 * @internal used by Apnsd\Client only
 */
final class Pending
{
    /** @var array<string, mixed> the request without id and deadline */
    public $obj;
    /** @var bool may be resent after the connection broke with it unanswered */
    public $resend;
    /** @var float|null */
    public $deadline;
    /** @var int|null */
    public $deadlineMs;
    /** @var int times (at least partly) written */
    public $attempts = 0;
    /** @var int|null id of the latest attempt */
    public $id;
    /** @var array<string, mixed>|null the final answer */
    public $response;
    /** @var array<string, mixed>|null the latest retryable answer */
    public $last;

    /** @param array<string, mixed> $obj */
    public function __construct(array $obj, bool $resend = true, ?float $deadline = null, ?int $deadlineMs = null, int $attempts = 0)
    {
        $this->obj = $obj;
        $this->resend = $resend;
        $this->deadline = $deadline;
        $this->deadlineMs = $deadlineMs;
        $this->attempts = $attempts;
    }

    /** Seconds until the deadline (negative: past), or null without one. */
    public function timeLeft(): ?float
    {
        return $this->deadline === null ? null : $this->deadline - microtime(true);
    }
}
