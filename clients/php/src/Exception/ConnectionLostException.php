<?php

declare(strict_types=1);

namespace Apnsd\Exception;

/**
 * The connection to apnsd broke after a request had been (at least partly)
 * written, for instance because apnsd was restarted. The client never sends a
 * notification twice, so it does not retry: a notification without a Result
 * may or may not have been delivered.
 *
 * (A connection found broken *before* anything is written to it is silently
 * replaced once; that never raises this exception.)
 */
class ConnectionLostException extends ApnsdException
{
}
