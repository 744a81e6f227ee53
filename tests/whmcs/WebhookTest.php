<?php
/**
 * The receiver's Standard Webhooks verification (integrations/whmcs/.../lib/Webhook.php):
 * the specification's published test vector, rotation, and each refusal with its status.
 */

declare(strict_types=1);

require_once __DIR__ . '/../../integrations/whmcs/modules/servers/pvekvm/lib/Webhook.php';

use PHPUnit\Framework\TestCase;
use PveKvm\Webhook;
use PveKvm\WebhookRefused;

final class WebhookTest extends TestCase
{
    // the Standard Webhooks specification's example delivery
    private const SECRET = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';
    private const ID = 'msg_p5jXN8AQM9LWM0D4loKWxJek';
    private const TS = 1614265330;
    private const BODY = '{"test": 2432232314}';
    private const SIGNATURE = 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=';
    private const OTHER = 'whsec_' . 'c2VjcmV0LW9mLWFub3RoZXItZW5kcG9pbnQ=';

    private function refusal(callable $call): WebhookRefused
    {
        try {
            $call();
        } catch (WebhookRefused $e) {
            return $e;
        }
        $this->fail('accepted');
    }

    public function testTheSpecificationsVectorIsAccepted(): void
    {
        (new Webhook([self::SECRET]))->verify(self::ID, (string) self::TS, self::SIGNATURE, self::BODY, self::TS);
        (new Webhook([substr(self::SECRET, 6)]))->verify(self::ID, (string) self::TS, self::SIGNATURE, self::BODY, self::TS + 299);
        $this->assertSame(self::SIGNATURE, Webhook::sign(base64_decode(substr(self::SECRET, 6)), self::ID, self::TS, self::BODY));
    }

    public function testDuringARotationEitherSecretAndEitherSignatureVerifies(): void
    {
        $both = new Webhook([self::OTHER, self::SECRET]);
        $both->verify(self::ID, (string) self::TS, 'v1,bm90LWEtc2lnbmF0dXJl ' . self::SIGNATURE, self::BODY, self::TS);
        $this->assertSame(401, $this->refusal(fn () => (new Webhook([self::OTHER]))
            ->verify(self::ID, (string) self::TS, self::SIGNATURE, self::BODY, self::TS))->status);
    }

    public function testATamperedBodyIdOrTimestampIsRefused(): void
    {
        $w = new Webhook([self::SECRET]);
        foreach ([[self::ID, self::TS, self::BODY . ' '], ['msg_other', self::TS, self::BODY],
                  [self::ID, self::TS + 1, self::BODY]] as [$id, $ts, $body]) {
            $e = $this->refusal(fn () => $w->verify($id, (string) $ts, self::SIGNATURE, $body, self::TS));
            $this->assertSame([401, 'no valid signature'], [$e->status, $e->getMessage()]);
        }
        $v2 = 'v2,' . substr(self::SIGNATURE, 3);  // another scheme's entry is not a v1 signature
        $this->assertSame(401, $this->refusal(fn () => $w->verify(self::ID, (string) self::TS, $v2, self::BODY, self::TS))->status);
    }

    public function testOutsideTheFiveMinuteWindowEitherWayIsRefused(): void
    {
        $w = new Webhook([self::SECRET]);
        foreach ([self::TS + 301, self::TS - 301] as $now) {
            $e = $this->refusal(fn () => $w->verify(self::ID, (string) self::TS, self::SIGNATURE, self::BODY, $now));
            $this->assertSame(400, $e->status);
            $this->assertStringContainsString('outside the 300 s tolerance', $e->getMessage());
        }
    }

    public function testMalformedHeadersAreRefusedWithTheirReason(): void
    {
        $w = new Webhook([self::SECRET]);
        $cases = [['', (string) self::TS, self::SIGNATURE, 'webhook-id'],
                  [self::ID, '', self::SIGNATURE, 'webhook-timestamp'],
                  [self::ID, '16142653.30', self::SIGNATURE, 'webhook-timestamp'],
                  [self::ID, str_repeat('9', 4000), self::SIGNATURE, 'webhook-timestamp'],
                  [self::ID, (string) self::TS, '', 'webhook-signature'],
                  [str_repeat('x', 257), (string) self::TS, self::SIGNATURE, 'webhook-id']];
        foreach ($cases as [$id, $ts, $sig, $header]) {
            $e = $this->refusal(fn () => $w->verify($id, $ts, $sig, self::BODY, self::TS));
            $this->assertSame(400, $e->status);
            $this->assertStringContainsString($header, $e->getMessage());
        }
        // a header of 10,000 signatures is cut to the first 16: the real one past them fails
        $many = str_repeat('v1,AAAA ', 10000) . self::SIGNATURE;
        $this->assertSame(401, $this->refusal(fn () => $w->verify(self::ID, (string) self::TS, $many, self::BODY, self::TS))->status);
    }

    public function testASecretThatIsNotBase64IsAConfigurationError(): void
    {
        $this->expectException(InvalidArgumentException::class);
        new Webhook(['whsec_not base64!']);
    }
}
