<?php
/**
 * Standard Webhooks verification (https://www.standardwebhooks.com/): the signed content is
 * "{webhook-id}.{webhook-timestamp}.{body}", signed with HMAC-SHA256 keyed with the base64
 * decoding of the secret after its "whsec_" prefix; `webhook-signature` is a space-separated
 * list of "v1,<base64 signature>" (several while a secret is being rotated).
 *
 * Invariants: a request is accepted only when one of its v1 signatures matches one of the
 * configured secrets (compared with hash_equals, in constant time) and its timestamp is within
 * TOLERANCE_S of now, either way; nothing of what was sent is echoed in a reason.
 */

declare(strict_types=1);

namespace PveKvm;

final class WebhookRefused extends \RuntimeException
{
    public function __construct(string $reason, public readonly int $status)
    {
        parent::__construct($reason);
    }
}

final class Webhook
{
    public const TOLERANCE_S = 300;
    public const MAX_SIGNATURES = 16;

    /** @var list<string> raw HMAC keys */
    private array $keys = [];

    /** @param list<string> $secrets "whsec_<base64>" (the prefix may be left out) */
    public function __construct(array $secrets)
    {
        foreach ($secrets as $secret) {
            $secret = (string) $secret;
            if (str_starts_with($secret, 'whsec_')) {
                $secret = substr($secret, 6);
            }
            $key = base64_decode($secret, true);
            if ($key === false || $key === '') {
                throw new \InvalidArgumentException('a webhook secret is not whsec_ followed by base64');
            }
            $this->keys[] = $key;
        }
        if (!$this->keys) {
            throw new \InvalidArgumentException('no webhook secret configured');
        }
    }

    public static function sign(string $key, string $id, int $timestamp, string $body): string
    {
        return 'v1,' . base64_encode(hash_hmac('sha256', "$id.$timestamp.$body", $key, true));
    }

    /**
     * Check one delivery; throws WebhookRefused (status 400 or 401, with the reason) if it is
     * not authentic or not fresh.
     */
    public function verify(string $id, string $timestamp, string $signatures, string $body, ?int $now = null): void
    {
        $now ??= time();
        if ($id === '' || strlen($id) > 256 || preg_match('/[^\x21-\x7e]/', $id)) {
            throw new WebhookRefused('missing or malformed webhook-id header', 400);
        }
        if (!preg_match('/^[0-9]{1,12}$/', $timestamp)) {
            throw new WebhookRefused('missing or malformed webhook-timestamp header', 400);
        }
        $ts = (int) $timestamp;
        if (abs($now - $ts) > self::TOLERANCE_S) {
            throw new WebhookRefused('webhook-timestamp is outside the ' . self::TOLERANCE_S . ' s tolerance', 400);
        }
        $given = array_slice(array_filter(explode(' ', $signatures), 'strlen'), 0, self::MAX_SIGNATURES);
        if (!$given) {
            throw new WebhookRefused('missing webhook-signature header', 400);
        }
        $matched = false;
        foreach ($this->keys as $key) {
            $expected = self::sign($key, $id, $ts, $body);
            foreach ($given as $signature) {
                // no early exit: every pair is compared, so timing says nothing about which
                $matched = hash_equals($expected, $signature) || $matched;
            }
        }
        if (!$matched) {
            throw new WebhookRefused('no valid signature', 401);
        }
    }
}
