<?php

declare(strict_types=1);

namespace Apnsd\Exception;

/**
 * No verdict from apnsd within the client's timeout (retries included). The
 * connection is closed. Each request carried a deadline (the moment it was
 * written plus the timeout) that has passed: apnsd answers "expired" to a
 * request it reads after it and never sends it, so it will not *start*
 * sending a timed-out notification any more. One apnsd had already handed to
 * Apple may still arrive. (An apnsd older than protocol 1.1 ignores
 * deadlines: there a timed-out notification may still be sent later.)
 */
class TimeoutException extends ApnsdException
{
}
