<?php

declare(strict_types=1);

namespace Apnsd\Exception;

/**
 * apnsd made no progress (accepted no data, sent no answer) for the client's
 * timeout. The connection is closed. A notification that timed out may still
 * be delivered by apnsd: do not blindly send it again.
 */
class TimeoutException extends ApnsdException
{
}
