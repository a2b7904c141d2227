<?php

declare(strict_types=1);

namespace Apnsd\Exception;

/**
 * apnsd could not be reached at all: the socket does not exist, nobody is
 * listening on it (connection refused), or this process may not open it
 * (permission denied). Nothing was sent.
 */
class DaemonUnreachableException extends ApnsdException
{
    /** @var string */
    private $socketPath;

    public function __construct(string $message, string $socketPath, int $code = 0, ?\Throwable $previous = null)
    {
        parent::__construct($message, $code, $previous);
        $this->socketPath = $socketPath;
    }

    public function getSocketPath(): string
    {
        return $this->socketPath;
    }
}
