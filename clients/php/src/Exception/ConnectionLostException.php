<?php

declare(strict_types=1);

namespace Apnsd\Exception;

/**
 * The connection to apnsd broke after a request had been (at least partly)
 * written, and the client could not resend it: resend_unanswered is off, the
 * op is never resent (channelCreate), or its attempts or its timeout were
 * used up. A notification without a Result may or may not have been
 * delivered.
 *
 * (A connection found broken *before* anything is written to it is silently
 * replaced; by default, requests a broken connection left unanswered are
 * resent, at least once, before this is thrown.)
 */
class ConnectionLostException extends ApnsdException
{
}
