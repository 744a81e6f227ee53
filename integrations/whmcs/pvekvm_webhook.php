<?php
/**
 * pvekvm → WHMCS webhook receiver (copy to the WHMCS root, beside init.php).
 *
 * Verifies each delivery as Standard Webhooks says (modules/servers/pvekvm/lib/Webhook.php),
 * then records what billing keeps through WHMCS's local API: the service's status, and on
 * service.ready the data of the ready mail (host name, addresses, OS user and the password read
 * from the pvekvm API); operation failures and refusals go to WHMCS's activity log.
 *
 * Answers: 2xx once recorded (or ignored: a type billing does not keep), 400/401 for a request
 * that is not a fresh, authentic delivery, 413 for an oversized body, 500 when WHMCS refused a
 * write (the deliverer retries). Every handler sets values, never adds to them, so a delivery
 * seen twice (at least once) leaves WHMCS as once.
 */

declare(strict_types=1);

use PveKvm\ApiClient;
use PveKvm\Webhook;
use PveKvm\WebhookRefused;

const PVEKVM_WEBHOOK_MAX_BODY = 256 * 1024;

function pvekvm_webhook_answer(int $status, string $message): never
{
    http_response_code($status);
    header('Content-Type: application/json');
    echo json_encode(['status' => $status, 'message' => $message]), "\n";
    exit;
}

function pvekvm_webhook_header(string $name): string
{
    $value = $_SERVER['HTTP_' . strtoupper(str_replace('-', '_', $name))] ?? '';
    return is_string($value) ? trim($value) : '';
}

/** At most $max characters of UTF-8 text (PCRE only: no mbstring needed). */
function pvekvm_webhook_cut(string $text, int $max): string
{
    return preg_match('/^.{0,' . $max . '}/su', $text, $m) ? $m[0] : substr($text, 0, $max);
}

/** localAPI, refusing the delivery (500, the deliverer retries) when WHMCS refuses the write. */
function pvekvm_webhook_local(string $command, array $values, array $config): array
{
    $result = localAPI($command, $values, $config['admin_user'] ?? null);
    if (($result['result'] ?? '') !== 'success') {
        $why = is_string($result['message'] ?? null) ? $result['message'] : 'no reason given';
        pvekvm_webhook_answer(500, "WHMCS refused $command: $why");
    }
    return $result;
}

/** The service's OS login, read from the pvekvm API (events never carry a password). */
function pvekvm_webhook_credentials(array $config, int $sid): ?array
{
    if (empty($config['api_url']) || empty($config['api_token'])) {
        return null;
    }
    $api = new ApiClient(rtrim((string) $config['api_url'], '/'), (string) $config['api_token'], 10);
    return $api->get("/v1/services/$sid/credentials");
}

function pvekvm_webhook_record(array $event, array $config): string
{
    $type = $event['type'];
    $sid = $event['service_id'];
    $kind = is_string($event['kind'] ?? null) ? $event['kind'] : '';
    switch ($type) {
        case 'service.ready':
            $ipv4 = array_values(array_filter((array) ($event['ipv4'] ?? []), 'is_string'));
            $ipv6 = array_values(array_filter((array) ($event['ipv6'] ?? []), 'is_string'));
            $addresses = array_merge($ipv4, $ipv6);
            $update = ['serviceid' => $sid, 'status' => 'Active',
                       'dedicatedip' => (string) ($addresses[0] ?? ''),
                       'assignedips' => implode("\n", array_slice($addresses, 1)),
                       'serviceusername' => (string) ($event['os_user'] ?? '')];
            if (is_string($event['hostname'] ?? null) && $event['hostname'] !== '') {
                $update['domain'] = $event['hostname'];
            }
            $creds = pvekvm_webhook_credentials($config, $sid);
            if ($creds !== null && is_string($creds['password'] ?? null)) {
                $update['servicepassword'] = $creds['password'];
            }
            pvekvm_webhook_local('UpdateClientProduct', $update, $config);
            if (!empty($config['ready_email'])) {
                pvekvm_webhook_local('SendEmail', ['messagename' => (string) $config['ready_email'], 'id' => $sid,
                    'customvars' => base64_encode(serialize(['pvekvm_hostname' => $update['domain'] ?? '',
                        'pvekvm_addresses' => $addresses, 'pvekvm_vmid' => (int) ($event['vmid'] ?? 0)]))], $config);
            }
            return "service $sid ready: recorded";
        case 'service.suspended':
            pvekvm_webhook_local('UpdateClientProduct', ['serviceid' => $sid, 'status' => 'Suspended'], $config);
            return "service $sid suspended: recorded";
        case 'service.terminated':
            pvekvm_webhook_local('UpdateClientProduct', ['serviceid' => $sid, 'status' => 'Terminated'], $config);
            return "service $sid terminated: recorded";
        case 'operation.completed':
            if ($kind === 'reset_password') {
                $creds = pvekvm_webhook_credentials($config, $sid);
                if ($creds !== null && is_string($creds['password'] ?? null)) {
                    pvekvm_webhook_local('UpdateClientProduct', ['serviceid' => $sid,
                        'servicepassword' => $creds['password']], $config);
                    return "service $sid: new password recorded";
                }
            }
            return "service $sid: $kind completed";
        case 'service.rescue_on':
        case 'service.rescue_off':
            // rescue mode changed (a completed rescue_on/off, or, with a reason, a rollback or
            // an interrupted rescue operation): the admin sees it in the activity log
            $reason = is_string($event['reason'] ?? null) ? ': ' . $event['reason'] : '';
            $what = $type === 'service.rescue_on' ? 'in rescue mode' : 'out of rescue mode';
            pvekvm_webhook_local('LogActivity', ['description' => pvekvm_webhook_cut("pvekvm: service $sid: $what ($kind)$reason", 1000)], $config);
            return "service $sid: $what: logged";
        case 'operation.failed':
        case 'operation.paused':
        case 'event.refused':
            $reason = (string) ($event['reason'] ?? $event['error'] ?? '');
            $what = $type === 'event.refused' ? 'order ' . ($event['event_type'] ?? '') . ' refused'
                : "$kind " . substr($type, strlen('operation.'));
            pvekvm_webhook_local('LogActivity', ['description' => pvekvm_webhook_cut("pvekvm: service $sid: $what: $reason", 1000)], $config);
            return "service $sid: $what: logged";
        default:
            return "$type: not kept by billing";
    }
}

function pvekvm_webhook_main(array $config): never
{
    if (($_SERVER['REQUEST_METHOD'] ?? '') !== 'POST') {
        header('Allow: POST');
        pvekvm_webhook_answer(405, 'POST only');
    }
    $body = (string) file_get_contents('php://input', false, null, 0, PVEKVM_WEBHOOK_MAX_BODY + 1);
    if (strlen($body) > PVEKVM_WEBHOOK_MAX_BODY) {
        pvekvm_webhook_answer(413, 'body over ' . PVEKVM_WEBHOOK_MAX_BODY . ' bytes');
    }
    try {
        (new Webhook((array) ($config['secrets'] ?? [])))->verify(pvekvm_webhook_header('webhook-id'),
            pvekvm_webhook_header('webhook-timestamp'), pvekvm_webhook_header('webhook-signature'), $body);
    } catch (WebhookRefused $e) {
        pvekvm_webhook_answer($e->status, $e->getMessage());
    } catch (InvalidArgumentException $e) {
        pvekvm_webhook_answer(500, 'receiver misconfigured: ' . $e->getMessage());
    }
    try {
        $event = json_decode($body, true, 32, JSON_THROW_ON_ERROR);
    } catch (JsonException) {
        pvekvm_webhook_answer(400, 'body is not JSON (or nested past 32 levels)');
    }
    if (!is_array($event) || !is_string($event['type'] ?? null)) {
        pvekvm_webhook_answer(400, 'body is not a pvekvm event (no type)');
    }
    $sid = $event['service_id'] ?? null;
    if (!is_int($sid) || $sid < 1) {
        pvekvm_webhook_answer(200, 'no service named: nothing to record');
    }
    try {
        pvekvm_webhook_answer(200, pvekvm_webhook_record($event, $config));
    } catch (Throwable $e) {
        pvekvm_webhook_answer(500, 'not recorded: ' . $e->getMessage());
    }
}

// WHMCS, then the module's classes and the receiver's settings
// (modules/servers/pvekvm/webhook.config.php, see webhook.config.php.example)
require __DIR__ . '/init.php';
require_once __DIR__ . '/modules/servers/pvekvm/lib/ApiClient.php';
require_once __DIR__ . '/modules/servers/pvekvm/lib/Webhook.php';
pvekvm_webhook_main(require __DIR__ . '/modules/servers/pvekvm/webhook.config.php');
