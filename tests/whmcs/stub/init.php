<?php
/**
 * A stand-in for WHMCS's init.php in the tests (WHMCS itself cannot run here): the functions
 * the module and the receiver call, each recording its call as one JSON line in the file
 * PVEKVM_WHMCS_CALLS names. localAPI answers success, or, for the command written in the
 * file PVEKVM_WHMCS_REFUSE_FILE names, an error as WHMCS's local API gives one.
 */

declare(strict_types=1);

if (!defined('WHMCS')) {
    define('WHMCS', true);
}

function pvekvm_stub_record(string $function, array $args): void
{
    $file = getenv('PVEKVM_WHMCS_CALLS');
    if ($file) {
        file_put_contents($file, json_encode(['function' => $function, 'args' => $args],
            JSON_UNESCAPED_SLASHES | JSON_PARTIAL_OUTPUT_ON_ERROR) . "\n", FILE_APPEND | LOCK_EX);
    }
}

function localAPI(string $command, array $values = [], ?string $adminUser = null): array
{
    pvekvm_stub_record('localAPI', ['command' => $command, 'values' => $values, 'admin' => $adminUser]);
    $refuse = getenv('PVEKVM_WHMCS_REFUSE_FILE');
    if ($refuse && is_file($refuse) && trim((string) file_get_contents($refuse)) === $command) {
        return ['result' => 'error', 'message' => 'Service ID Not Found'];
    }
    return ['result' => 'success'];
}

function logModuleCall($module, $action, $request, $response, $processed = '', $replace = []): void
{
    pvekvm_stub_record('logModuleCall', ['module' => $module, 'action' => $action,
        'request' => $request, 'response' => $response]);
}
