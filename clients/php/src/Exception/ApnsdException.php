<?php

declare(strict_types=1);

namespace Apnsd\Exception;

use Apnsd\Result;

/**
 * Base class of everything the client throws when it could not get an answer
 * from apnsd. A notification that apnsd or Apple refused is NOT an exception:
 * it comes back as a Result with isOk() === false.
 *
 * When sendMany() fails half-way, getPartialResults() holds the final Results
 * that had already been received, under the same keys as the input array
 * (with retries, not necessarily a prefix). The notifications without a
 * Result may or may not have been sent.
 */
class ApnsdException extends \RuntimeException
{
    /** @var array<array-key, Result> */
    private $partialResults = [];

    /**
     * @param array<array-key, Result> $results
     * @internal used by Apnsd\Client
     */
    public function setPartialResults(array $results): void
    {
        $this->partialResults = $results;
    }

    /** @return array<array-key, Result> */
    public function getPartialResults(): array
    {
        return $this->partialResults;
    }
}
