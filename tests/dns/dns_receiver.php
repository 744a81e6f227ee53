<?php
// A dns.php receiver for pvekvm's `webhook` DNS provider, as an operator would write one in PHP:
// verifies the Standard Webhooks signature (hash_hmac over id.timestamp.body, hash_equals),
// refuses a stale timestamp, then applies the change to a JSON file of rrsets.
// Environment: DNS_SECRET (whsec_...), DNS_STORE (the JSON file). Run with `php -S`.
declare(strict_types=1);

function answer(int $status, array $body): void {
    http_response_code($status);
    header('Content-Type: application/json');
    echo json_encode($body);
    exit;
}

$body = file_get_contents('php://input');
$id = $_SERVER['HTTP_WEBHOOK_ID'] ?? '';
$stamp = $_SERVER['HTTP_WEBHOOK_TIMESTAMP'] ?? '';
$signatures = explode(' ', $_SERVER['HTTP_WEBHOOK_SIGNATURE'] ?? '');
if ($id === '' || !ctype_digit($stamp) || abs(time() - (int)$stamp) > 300) {
    answer(401, ['error' => 'missing or stale webhook headers']);
}
$key = base64_decode(substr(getenv('DNS_SECRET'), strlen('whsec_')), true);
$expected = 'v1,' . base64_encode(hash_hmac('sha256', "$id.$stamp.$body", $key, true));
$valid = false;
foreach ($signatures as $given) {
    $valid = $valid || hash_equals($expected, $given);
}
if (!$valid) {
    answer(401, ['error' => 'bad signature']);
}
try {
    $change = json_decode($body, true, 8, JSON_THROW_ON_ERROR);
} catch (JsonException $e) {
    answer(400, ['error' => 'body is not JSON']);
}
$store = getenv('DNS_STORE');
$records = is_file($store) ? json_decode(file_get_contents($store), true) : [];
if (($change['action'] ?? '') === 'probe') {
    answer(200, ['ok' => true]);
}
$key = ($change['name'] ?? '') . ' ' . ($change['type'] ?? '');
switch ($change['action'] ?? '') {
    case 'replace':
        $records[$key] = ['contents' => $change['contents'], 'ttl' => $change['ttl']];
        break;
    case 'delete':
        unset($records[$key]);
        break;
    default:
        answer(400, ['error' => 'unknown action']);
}
file_put_contents($store, json_encode((object)$records), LOCK_EX);
answer(200, ['ok' => true]);
