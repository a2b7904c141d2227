<?php

declare(strict_types=1);

namespace Apnsd\Tests\Unit;

use Apnsd\Result;
use PHPUnit\Framework\TestCase;

final class ResultTest extends TestCase
{
    public function testSuccess(): void
    {
        $r = new Result(['id' => 1, 'ok' => true, 'status' => 200, 'apns_id' => 'E4F1D2A0-0000-0000-0000-000000000001']);
        $this->assertTrue($r->isOk());
        $this->assertSame(200, $r->getStatus());
        $this->assertSame('E4F1D2A0-0000-0000-0000-000000000001', $r->apnsId);
        $this->assertFalse($r->isUnregistered());
        $this->assertFalse($r->isRetryable());
        $this->assertFalse($r->isQueued());
        $this->assertNull($r->getUnregisteredAt());
        $this->assertSame('200 (apns-id E4F1D2A0-0000-0000-0000-000000000001)', (string) $r);
    }

    public function testUnregistered(): void
    {
        $r = Result::fromResponse(['ok' => false, 'status' => 410, 'reason' => 'Unregistered', 'apns_id' => 'x', 'timestamp' => 1700000000999]);
        $this->assertTrue($r->isUnregistered());
        $this->assertSame(1700000000999, $r->timestamp);
        $this->assertSame('1700000000.999000', $r->getUnregisteredAt()->format('U.u'));
        $this->assertSame('410 Unregistered (apns-id x)', $r->describe());
    }

    public function testDaemonError(): void
    {
        $r = new Result(['ok' => false, 'error' => 'queue_full', 'message' => 'queue is full', 'retryable' => true]);
        $this->assertFalse($r->ok);
        $this->assertSame('queue_full', $r->error);
        $this->assertSame('queue is full', $r->message);
        $this->assertTrue($r->retryable);
        $this->assertNull($r->status);
        $this->assertSame('queue_full: queue is full', $r->describe());
    }

    public function testRetryableFallsBackToTheStatusOnlyWhenTheDaemonIsSilent(): void
    {
        $this->assertTrue((new Result(['ok' => false, 'status' => 503]))->isRetryable());
        $this->assertTrue((new Result(['ok' => false, 'status' => 500]))->isRetryable());
        $this->assertFalse((new Result(['ok' => false, 'status' => 403]))->isRetryable());
        $this->assertFalse((new Result(['ok' => false, 'status' => 503, 'retryable' => false]))->isRetryable());
    }

    public function testQueued(): void
    {
        $r = new Result(['ok' => true, 'queued' => true]);
        $this->assertTrue($r->isQueued());
        $this->assertTrue($r->queued);
        $this->assertSame('queued', $r->describe());
    }

    public function testReadOnly(): void
    {
        $r = new Result(['ok' => true, 'status' => 200]);
        $this->assertTrue(isset($r->status));
        $this->assertFalse(isset($r->reason));
        $this->assertSame(['ok' => true, 'status' => 200], $r->raw);
        $this->expectException(\LogicException::class);
        $r->status = 500;
    }

    public function testUnknownPropertyThrows(): void
    {
        $this->expectException(\LogicException::class);
        $r = new Result(['ok' => true]);
        $r->nope;
    }
}
