<?php

declare(strict_types=1);

namespace Apnsd\Exception;

/**
 * apnsd answered something that does not follow the socket protocol (not
 * JSON, not an object, a response whose "id" does not match the request).
 * The connection is closed; notifications without a Result may or may not
 * have been sent.
 */
class ProtocolException extends ApnsdException
{
}
