<?php

declare(strict_types=1);

namespace Apnsd;

/**
 * The verdict on one notification sent to many tokens (Client::sendMulticast).
 *
 * getResults() has one Result per token, in the order the tokens were given
 * (with "wait" => false: "queued" entries). Iterating the object and count()
 * work on that list.
 *
 * @implements \IteratorAggregate<int, Result>
 */
final class MulticastResult implements \IteratorAggregate, \Countable
{
    /** @var list<string> */
    private $tokens;
    /** @var list<Result> */
    private $results;
    /** @var int */
    private $queued;
    /** @var list<array<string, mixed>> */
    private $raw;

    /**
     * @param list<string>               $tokens  as the caller passed them
     * @param list<array<string, mixed>> $entries one per token
     * @param list<array<string, mixed>> $raw     the response lines
     *
     * @internal made by Apnsd\Client
     */
    public function __construct(array $tokens, array $entries, int $queued = 0, array $raw = [])
    {
        if (count($tokens) !== count($entries)) {
            throw new \LogicException(sprintf('%d results for %d tokens', count($entries), count($tokens)));
        }
        $this->tokens = array_values($tokens);
        $this->results = [];
        foreach ($entries as $e) {
            $this->results[] = new Result($e);
        }
        $this->queued = $queued;
        $this->raw = $raw;
    }

    /** True when every token succeeded (or, with wait=false, was queued). */
    public function isOk(): bool
    {
        foreach ($this->results as $r) {
            if (!$r->isOk()) {
                return false;
            }
        }

        return true;
    }

    /** @return list<Result> one per token, in order */
    public function getResults(): array
    {
        return $this->results;
    }

    /** @return list<string> the tokens as passed, in order */
    public function getTokens(): array
    {
        return $this->tokens;
    }

    /** How many APNs accepted. */
    public function getSent(): int
    {
        $n = 0;
        foreach ($this->results as $r) {
            if ($r->isOk() && !$r->isQueued()) {
                $n++;
            }
        }

        return $n;
    }

    /** How many were refused, by APNs or by apnsd. */
    public function getFailed(): int
    {
        $n = 0;
        foreach ($this->results as $r) {
            if (!$r->isOk()) {
                $n++;
            }
        }

        return $n;
    }

    /** With wait=false: how many apnsd queued; else 0. */
    public function getQueued(): int
    {
        return $this->queued;
    }

    /** When apnsd refused a whole request line (e.g. unknown_app): its code; else null. */
    public function getError(): ?string
    {
        $refusal = $this->lineRefusal();

        return $refusal === null ? null : (is_string($refusal['error']) ? $refusal['error'] : null);
    }

    /** The message of getError(). */
    public function getMessage(): ?string
    {
        $refusal = $this->lineRefusal();

        return $refusal === null ? null : (is_string($refusal['message'] ?? null) ? $refusal['message'] : null);
    }

    /**
     * Tokens (as passed) that APNs says are dead: delete them.
     *
     * @return list<string>
     */
    public function getUnregisteredTokens(): array
    {
        return $this->tokensWhere(static function (Result $r): bool {
            return $r->isUnregistered();
        });
    }

    /**
     * Tokens (as passed) that were not delivered, for any reason.
     *
     * @return list<string>
     */
    public function getFailedTokens(): array
    {
        return $this->tokensWhere(static function (Result $r): bool {
            return !$r->isOk();
        });
    }

    /**
     * Tokens that failed but may succeed if sent again later.
     *
     * @return list<string>
     */
    public function getRetryableTokens(): array
    {
        return $this->tokensWhere(static function (Result $r): bool {
            return !$r->isOk() && $r->isRetryable();
        });
    }

    /**
     * Tokens (as passed) that APNs accepted (or apnsd queued).
     *
     * @return list<string>
     */
    public function getSucceededTokens(): array
    {
        return $this->tokensWhere(static function (Result $r): bool {
            return $r->isOk();
        });
    }

    /** @return list<array<string, mixed>> the response line(s), as apnsd sent them */
    public function getRaw(): array
    {
        return $this->raw;
    }

    /** @return \ArrayIterator<int, Result> */
    public function getIterator(): \ArrayIterator
    {
        return new \ArrayIterator($this->results);
    }

    public function count(): int
    {
        return count($this->results);
    }

    /** A one-line summary for logs. */
    public function describe(): string
    {
        $s = sprintf('%d token(s): ', count($this->tokens));
        $s .= $this->queued > 0 ? sprintf('%d queued', $this->queued) : sprintf('%d sent', $this->getSent());
        $s .= sprintf(', %d failed', $this->getFailed());
        if ($this->getError() !== null) {
            $s .= ' (' . $this->getError() . ')';
        }

        return $s;
    }

    /** @return list<string> */
    private function tokensWhere(callable $pred): array
    {
        $out = [];
        foreach ($this->results as $i => $r) {
            if ($pred($r)) {
                $out[] = $this->tokens[$i];
            }
        }

        return $out;
    }

    /** @return array<string, mixed>|null */
    private function lineRefusal(): ?array
    {
        foreach ($this->raw as $resp) {
            if (is_array($resp) && ($resp['ok'] ?? null) === false && !array_key_exists('results', $resp) && isset($resp['error'])) {
                return $resp;
            }
        }

        return null;
    }
}
