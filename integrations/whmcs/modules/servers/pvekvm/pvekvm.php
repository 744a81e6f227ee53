<?php
/**
 * pvekvm provisioning module for WHMCS: every lifecycle call and button posts one order event
 * to the pvekvm service API (`POST /v1/events`) for the service WHMCS passes, and answers
 * "success" once the engine's broker has it, or the reason. The work itself runs in pvekvm's
 * workers; its results come back through the webhook receiver (pvekvm_webhook.php).
 *
 * Server entry (Setup > Servers): hostname of the API, port, SSL, and the billing token in
 * Access Hash. Product settings: configoption1 product, 2 template, 3 location, 4 IPv6,
 * 5 console page URL.
 */

declare(strict_types=1);

if (!defined('WHMCS')) {
    die('This file cannot be accessed directly');
}

require_once __DIR__ . '/lib/ApiClient.php';
require_once __DIR__ . '/lib/Module.php';
require_once __DIR__ . '/lib/ClientArea.php';

use PveKvm\ApiError;
use PveKvm\Module;

function pvekvm_MetaData(): array
{
    return [
        'DisplayName' => 'pvekvm (Proxmox VE KVM)',
        'APIVersion' => '1.1',
        'RequiresServer' => true,
        'DefaultNonSSLPort' => '8080',
        'DefaultSSLPort' => '443',
    ];
}

function pvekvm_ConfigOptions(): array
{
    return [
        'Product' => ['Type' => 'text', 'Size' => '32', 'Loader' => 'pvekvm_ProductLoader',
                      'SimpleMode' => true, 'Description' => 'the pvekvm product (catalog name)'],
        'Template' => ['Type' => 'text', 'Size' => '32', 'Loader' => 'pvekvm_TemplateLoader',
                       'SimpleMode' => true,
                       'Description' => 'empty: the product\'s; a configurable option "Template" lets the client choose'],
        'Location' => ['Type' => 'text', 'Size' => '32', 'Loader' => 'pvekvm_LocationLoader',
                       'SimpleMode' => true,
                       'Description' => 'empty: the engine places it; a configurable option "Location" lets the client choose'],
        'IPv6' => ['Type' => 'yesno', 'SimpleMode' => true, 'Description' => 'give the VM IPv6 (the product needs an IPv6 pool)'],
        'Console page URL' => ['Type' => 'text', 'Size' => '60', 'SimpleMode' => true,
                               'Description' => 'https://… of the console proxy\'s page; empty: no console link'],
    ];
}

/** The API's catalog (GET /v1/products). @return array<string, mixed> */
function pvekvm_catalog(array $params): array
{
    return Module::api($params)->get('/v1/products');
}

function pvekvm_ProductLoader(array $params): array
{
    $out = [];
    foreach (pvekvm_catalog($params)['products'] ?? [] as $p) {
        $out[(string) $p['name']] = sprintf('%s (%d vCPU, %d MB, %d GB)', $p['name'], $p['cores'], $p['memory_mb'], $p['disk_gb']);
    }
    return $out;
}

function pvekvm_TemplateLoader(array $params): array
{
    $out = ['' => '(the product\'s template)'];
    foreach (pvekvm_catalog($params)['templates'] ?? [] as $t) {
        $out[(string) $t['name']] = (string) $t['name'];
    }
    return $out;
}

function pvekvm_LocationLoader(array $params): array
{
    $out = ['' => '(the engine places it)'];
    foreach (pvekvm_catalog($params)['locations'] ?? [] as $l) {  // an engine with locations
        $name = is_array($l) ? (string) ($l['name'] ?? '') : (string) $l;
        if ($name !== '') {
            $out[$name] = $name;
        }
    }
    return $out;
}

function pvekvm_CreateAccount(array $params): string
{
    try {
        $sid = Module::serviceId($params);
        $product = Module::option($params, 1, 'Product');
        if (!preg_match(Module::SLUG, $product)) {
            return 'the product\'s pvekvm product (module setting "Product") is not set or not a catalog name';
        }
        $client = (int) ($params['userid'] ?? $params['clientsdetails']['userid'] ?? 0);
        $email = (string) ($params['clientsdetails']['email'] ?? '');
        if ($client < 1 || $email === '') {
            return 'WHMCS passed no client id or e-mail address';
        }
        $fields = ['client_id' => $client, 'product' => $product, 'email' => $email];
        $hostname = strtolower(trim((string) ($params['domain'] ?? '')));
        if ($hostname !== '') {
            if (!Module::isHostname($hostname)) {
                return 'the service\'s domain is not a host name (RFC 1123: letters, digits, hyphens, dots); correct it or leave it empty';
            }
            $fields['hostname'] = $hostname;
        }
        $template = Module::option($params, 2, 'Template');
        if ($template !== '') {
            if (!preg_match(Module::SLUG, $template)) {
                return 'the template is not a catalog name';
            }
            // the order form's OS picker: a template the product does not offer is refused
            // now, in the engine's words (the engine refuses it too, later)
            $offer = Module::api($params)->get('/v1/products/' . rawurlencode($product) . '/templates');
            $names = array_map(static fn (array $t): string => (string) $t['name'], $offer['templates'] ?? []);
            if (!in_array($template, $names, true)) {
                return sprintf("template '%s' is not offered by product '%s' (offered: %s)",
                    $template, $product, implode(', ', $names));
            }
            $fields['template'] = $template;
        }
        $location = Module::option($params, 3, 'Location');
        if ($location !== '') {
            $fields['location'] = $location;
        }
        $ipv6 = $params['configoption4'] ?? '';
        if ($ipv6 === 'on' || $ipv6 === true || $ipv6 === '1') {
            $fields['ipv6'] = true;
        }
        $language = Module::language($params);
        if ($language !== null) {
            $fields['language'] = $language;
        }
        $keys = Module::sshKeys($params);
        if ($keys !== []) {
            $fields['ssh_keys'] = $keys;
        }
        $api = Module::api($params);
        $existing = Module::service($api, $sid);
        if ($existing !== null && ($existing['status'] ?? '') !== 'terminated') {
            // a retry of a create the engine already has (WHMCS's module queue): done, if it
            // is this client's
            if ((int) ($existing['client_id'] ?? 0) !== $client) {
                return "pvekvm's service $sid belongs to another client";
            }
            if (($existing['status'] ?? '') === 'failed') {
                return "pvekvm's service $sid failed to deploy (python -m pvekvm history $sid "
                    . 'says why): terminate it, then create it again';
            }
            return 'success';
        }
        $api->postEvent('create', $sid, Module::callKey($sid, 'create'), $fields);
        return 'success';
    } catch (Throwable $e) {
        return Module::fail($e, __FUNCTION__, $params);
    }
}

function pvekvm_SuspendAccount(array $params): string
{
    try {
        $sid = Module::serviceId($params);
        $api = Module::api($params);
        $svc = Module::service($api, $sid);
        if ($svc === null) {
            return "pvekvm has no service $sid";
        }
        if (in_array($svc['status'] ?? '', ['suspended', 'suspending'], true)) {
            return 'success';
        }
        $api->postEvent('suspend', $sid, Module::callKey($sid, 'suspend'));
        return 'success';
    } catch (Throwable $e) {
        return Module::fail($e, __FUNCTION__, $params);
    }
}

function pvekvm_UnsuspendAccount(array $params): string
{
    try {
        $sid = Module::serviceId($params);
        $api = Module::api($params);
        $svc = Module::service($api, $sid);
        if ($svc === null) {
            return "pvekvm has no service $sid";
        }
        if (in_array($svc['status'] ?? '', ['terminated', 'terminating'], true)) {
            return "service $sid is " . $svc['status'];
        }
        $api->postEvent('unsuspend', $sid, Module::callKey($sid, 'unsuspend'));
        return 'success';
    } catch (Throwable $e) {
        return Module::fail($e, __FUNCTION__, $params);
    }
}

function pvekvm_TerminateAccount(array $params): string
{
    try {
        $sid = Module::serviceId($params);
        $api = Module::api($params);
        $svc = Module::service($api, $sid);
        if ($svc === null || in_array($svc['status'] ?? '', ['terminated', 'terminating'], true)) {
            return 'success';  // nothing (left) to terminate
        }
        $api->postEvent('terminate', $sid, Module::callKey($sid, 'terminate'));
        return 'success';
    } catch (Throwable $e) {
        return Module::fail($e, __FUNCTION__, $params);
    }
}

function pvekvm_ChangePackage(array $params): string
{
    try {
        $sid = Module::serviceId($params);
        $product = Module::option($params, 1, 'Product');
        if (!preg_match(Module::SLUG, $product)) {
            return 'the new product\'s pvekvm product (module setting "Product") is not set';
        }
        $api = Module::api($params);
        $svc = Module::service($api, $sid);
        if ($svc === null || in_array($svc['status'] ?? '', ['terminated', 'terminating'], true)) {
            return "pvekvm has no live service $sid";
        }
        if (($svc['product'] ?? null) === $product) {
            return 'success';  // only WHMCS-side options changed: nothing for the VM
        }
        $api->postEvent('change_package', $sid, Module::callKey($sid, 'change_package'), ['product' => $product]);
        return 'success';
    } catch (Throwable $e) {
        return Module::fail($e, __FUNCTION__, $params);
    }
}

/**
 * pvekvm sets passwords itself (an order event never carries a secret): this orders a new
 * random one; the webhook receiver writes it into the service once the VM has it.
 */
function pvekvm_ChangePassword(array $params): string
{
    try {
        return Module::order($params, 'reset_password', 'reset_password');
    } catch (Throwable $e) {
        return Module::fail($e, __FUNCTION__, $params);
    }
}

function pvekvm_TestConnection(array $params): array
{
    try {
        $catalog = pvekvm_catalog($params);
        if (!isset($catalog['products'])) {
            return ['success' => false, 'error' => 'the server answered, but not as the pvekvm API'];
        }
        return ['success' => true, 'error' => ''];
    } catch (ApiError $e) {
        $why = match ($e->status) {
            401 => 'the API refused the token (Access Hash): ' . $e->getMessage(),
            403 => 'the token is not a billing token: ' . $e->getMessage(),
            default => $e->getMessage(),
        };
        return ['success' => false, 'error' => $why];
    } catch (Throwable $e) {
        return ['success' => false, 'error' => Module::fail($e, __FUNCTION__, $params)];
    }
}

// ------------------------------------------------------------------ buttons

function pvekvm_AdminCustomButtonArray(): array
{
    return [
        'Start' => 'start', 'Stop' => 'stop', 'Shut down' => 'shutdown', 'Reboot' => 'reboot',
        'Reset password' => 'resetPassword', 'Reinstall' => 'reinstall',
        'Back up now' => 'backupCreate', 'Unmount ISO' => 'isoUnmount',
        'Sync mail language' => 'languageSync', 'Rescue on' => 'rescueOn', 'Rescue off' => 'rescueOff',
    ];
}

function pvekvm_ClientAreaCustomButtonArray(): array
{
    return [
        'Start' => 'start', 'Stop' => 'stop', 'Shut down' => 'shutdown', 'Reboot' => 'reboot',
        'Reset password' => 'resetPassword', 'Unmount ISO' => 'isoUnmount',
        'Rescue on' => 'rescueOn', 'Rescue off' => 'rescueOff',
    ];
}

/** The client-area forms (templates/clientarea.tpl) post to these. */
function pvekvm_ClientAreaAllowedFunctions(): array
{
    return ['reinstall', 'snapshotCreate', 'snapshotDelete', 'snapshotRollback', 'backupCreate',
            'backupDelete', 'backupRestore', 'isoMount', 'rdnsSet', 'rdnsReset', 'resetPassword',
            'reinstallIso', 'rescueOn', 'rescueOff', 'firewallRulesSet', 'hostnameChange',
            'languageChange'];
}

/**
 * The client's language in WHMCS (their profile) becomes the service's mail language
 * (language_change): for a client who changed it after the order. Allowed while suspended.
 */
function pvekvm_languageSync(array $params): string
{
    try {
        $language = Module::language($params);
        if ($language === null) {
            return 'the client has no language pvekvm knows in WHMCS: the mail language is unchanged';
        }
        $sid = Module::serviceId($params);
        Module::api($params)->postEvent('language_change', $sid,
            Module::callKey($sid, 'language_change'), ['language' => $language]);
        return 'success';
    } catch (Throwable $e) {
        return Module::fail($e, 'language_change', $params);
    }
}

function pvekvm_power(array $params, string $action): string
{
    try {
        return Module::order($params, 'power_' . $action, 'power', ['action' => $action]);
    } catch (Throwable $e) {
        return Module::fail($e, 'power_' . $action, $params);
    }
}

function pvekvm_start(array $params): string { return pvekvm_power($params, 'start'); }
function pvekvm_stop(array $params): string { return pvekvm_power($params, 'stop'); }
function pvekvm_shutdown(array $params): string { return pvekvm_power($params, 'shutdown'); }
function pvekvm_reboot(array $params): string { return pvekvm_power($params, 'reboot'); }

/**
 * The button orders a new password; the client area's form may send new SSH keys with it
 * (pvekvm_ssh_keys, one OpenSSH line each: they replace the service's keys).
 */
function pvekvm_resetPassword(array $params): string
{
    try {
        $keys = pvekvm_posted_keys();
        if ($keys === []) {
            return pvekvm_ChangePassword($params);
        }
        return Module::order($params, 'reset_password', 'reset_password', ['ssh_keys' => $keys]);
    } catch (Throwable $e) {
        return Module::fail($e, 'reset_password', $params);
    }
}

/** The SSH keys a form posted in pvekvm_ssh_keys ([] when none: the service keeps its own). */
function pvekvm_posted_keys(): array
{
    if (($_SERVER['REQUEST_METHOD'] ?? 'GET') !== 'POST' || !isset($_POST['pvekvm_ssh_keys'])) {
        return [];
    }
    return Module::keyLines(Module::input('pvekvm_ssh_keys', 64 * 1024));
}

/**
 * Reinstall with the product's template or one the client picked from the templates the
 * service's product offers (GET /v1/services/{id}/templates: another is refused here with the
 * engine's reason), and optionally new SSH keys.
 */
function pvekvm_reinstall(array $params): string
{
    try {
        $fields = [];
        $template = ($_SERVER['REQUEST_METHOD'] ?? 'GET') === 'POST' ? Module::input('pvekvm_template', 64) : '';
        if ($template !== '') {
            if (!preg_match(Module::SLUG, $template)) {
                return 'field pvekvm_template: not a template name';
            }
            $sid = Module::serviceId($params);
            $offer = Module::api($params)->get("/v1/services/$sid/templates");
            $names = array_map(static fn (array $t): string => (string) $t['name'], $offer['templates'] ?? []);
            if (!in_array($template, $names, true)) {
                return sprintf("template '%s' is not offered by product '%s' (offered: %s)",
                    $template, (string) ($offer['product'] ?? ''), implode(', ', $names));
            }
            $fields['template'] = $template;
        }
        $keys = pvekvm_posted_keys();
        if ($keys !== []) {
            $fields['ssh_keys'] = $keys;
        }
        $why = pvekvm_rescue_refusal($params, null);
        if ($why !== null) {
            return $why;
        }
        return Module::order($params, 'reinstall', 'reinstall', $fields);
    } catch (Throwable $e) {
        return Module::fail($e, __FUNCTION__, $params);
    }
}

/** The second reinstall mode: empty disks, the installer ISO (one the product's ISO storage
 * holds) booted first, network and firewall kept; the client installs through the console. */
function pvekvm_reinstallIso(array $params): string
{
    try {
        $iso = Module::inputMatching('pvekvm_iso', Module::ISO_NAME, 'an ISO file name', 205);
        $why = pvekvm_rescue_refusal($params, null);
        if ($why !== null) {
            return $why;
        }
        return Module::order($params, 'reinstall_iso', 'reinstall_iso', ['iso' => $iso]);
    } catch (Throwable $e) {
        return Module::fail($e, __FUNCTION__, $params);
    }
}

/**
 * Why a rescue order (or, with $wantRescue null, an order rescue mode refuses) may not run
 * now, in the engine's words; null when it may. The engine checks again (intake).
 */
function pvekvm_rescue_refusal(array $params, ?bool $wantRescue): ?string
{
    $sid = Module::serviceId($params);
    $svc = Module::service(Module::api($params), $sid);
    $why = Module::blocked($svc, $sid);
    if ($why !== null) {
        return $why;
    }
    $inRescue = !empty($svc['rescue']);
    if ($wantRescue === true && $inRescue) {
        return "service $sid is in rescue mode already";
    }
    if ($wantRescue === false && !$inRescue) {
        return "service $sid is not in rescue mode";
    }
    if ($wantRescue === null && $inRescue) {
        return "service $sid is in rescue mode: send rescue_off first";
    }
    return null;
}

/** Rescue mode: the VM boots the provider's rescue ISO with its disks attached (the client's
 * password or keys through cloud-init); rescue off boots the disk again. */
function pvekvm_rescue(array $params, bool $on): string
{
    $type = $on ? 'rescue_on' : 'rescue_off';
    try {
        $why = pvekvm_rescue_refusal($params, $on);
        if ($why !== null) {
            return $why;
        }
        return Module::order($params, $type, $type);
    } catch (Throwable $e) {
        return Module::fail($e, $type, $params);
    }
}

function pvekvm_rescueOn(array $params): string { return pvekvm_rescue($params, true); }
function pvekvm_rescueOff(array $params): string { return pvekvm_rescue($params, false); }

/**
 * The client's own firewall rules, as one set replacing the last (a JSON list of rules as
 * GET /v1/services/{id}/firewall-rules shows them; [] removes them). The package's cap is
 * checked here with the engine's words; each rule is checked by the API (422: the reason).
 */
function pvekvm_firewallRulesSet(array $params): string
{
    try {
        $text = Module::input('pvekvm_rules', 64 * 1024);
        try {
            $rules = json_decode($text === '' ? '[]' : $text, true, 8, JSON_THROW_ON_ERROR);
        } catch (JsonException) {
            return 'field pvekvm_rules: not a JSON list of rules';
        }
        if (!is_array($rules) || !array_is_list($rules)) {
            return 'field pvekvm_rules: not a JSON list of rules';
        }
        $sid = Module::serviceId($params);
        $api = Module::api($params);
        $why = Module::blocked(Module::service($api, $sid), $sid);
        if ($why !== null) {
            return $why;
        }
        $allowed = (int) ($api->get("/v1/services/$sid/firewall-rules")['allowed'] ?? 0);
        if ($allowed <= 0 && $rules !== []) {
            return 'the package allows no client firewall rules';
        }
        if (count($rules) > $allowed) {
            return sprintf('too many firewall rules: %d (the package allows %d)', count($rules), $allowed);
        }
        $api->postEvent('firewall_rules_set', $sid, Module::callKey($sid, 'firewall_rules_set'),
            ['rules' => $rules]);
        return 'success';
    } catch (Throwable $e) {
        return Module::fail($e, 'firewall_rules_set', $params);
    }
}

/** The client renames its VM (DNS A/AAAA/PTR move, cloud-init gets it at the next boot). */
function pvekvm_hostnameChange(array $params): string
{
    try {
        $hostname = strtolower(rtrim(Module::input('pvekvm_hostname', 254), '.'));
        if (!Module::isHostname($hostname)) {
            return 'field pvekvm_hostname: not a host name (RFC 1123: letters, digits, hyphens, dots)';
        }
        return Module::order($params, 'hostname_change', 'hostname_change', ['hostname' => $hostname]);
    } catch (Throwable $e) {
        return Module::fail($e, 'hostname_change', $params);
    }
}

/** The client picks its mail language (one of the engine's: Module::LANGUAGES). */
function pvekvm_languageChange(array $params): string
{
    try {
        $tag = Module::input('pvekvm_language', 16);
        if (!in_array($tag, Module::LANGUAGES, true)) {
            return 'field pvekvm_language: not a language pvekvm sends mail in';
        }
        $sid = Module::serviceId($params);
        $api = Module::api($params);
        if (Module::service($api, $sid) === null) {
            return "pvekvm has no service $sid";
        }
        // allowed while suspended (the engine takes it then too)
        $api->postEvent('language_change', $sid, Module::callKey($sid, 'language_change'),
            ['language' => $tag]);
        return 'success';
    } catch (Throwable $e) {
        return Module::fail($e, 'language_change', $params);
    }
}

function pvekvm_snapshot(array $params, string $type): string
{
    try {
        $name = Module::inputMatching('pvekvm_snapshot', Module::SNAPSHOT_NAME,
            'a snapshot name (a letter, then letters, digits, _ or -; 2-40 characters)', 40);
        if (in_array(strtolower($name), ['current', 'pending'], true)) {
            return "field pvekvm_snapshot: '$name' is a name Proxmox reserves";
        }
        $fields = ['name' => $name];
        if ($type === 'snapshot_create') {
            $full = pvekvm_limit_reached($params, 'snapshots', 'snapshot_limit');
            if ($full !== null) {
                return "snapshot limit reached ($full)";
            }
            $description = Module::input('pvekvm_description', 255);
            if ($description !== '') {
                if (preg_match('/[\x00-\x1f\x7f]/', $description)) {
                    return 'field pvekvm_description: control characters are not allowed';
                }
                $fields['description'] = $description;
            }
        }
        return Module::order($params, $type, $type, $fields);
    } catch (Throwable $e) {
        return Module::fail($e, $type, $params);
    }
}

function pvekvm_snapshotCreate(array $params): string { return pvekvm_snapshot($params, 'snapshot_create'); }
function pvekvm_snapshotDelete(array $params): string { return pvekvm_snapshot($params, 'snapshot_delete'); }
function pvekvm_snapshotRollback(array $params): string { return pvekvm_snapshot($params, 'snapshot_rollback'); }

/**
 * "held/limit" when the service holds as many snapshots or backups as its product allows
 * (the engine refuses more, later; this answers now), else null.
 */
function pvekvm_limit_reached(array $params, string $list, string $limitField): ?string
{
    $sid = Module::serviceId($params);
    $api = Module::api($params);
    $svc = Module::service($api, $sid);
    if ($svc === null) {
        return null;  // Module::order answers that
    }
    $limit = null;
    foreach (pvekvm_catalog($params)['products'] ?? [] as $p) {
        if ($p['name'] === ($svc['product'] ?? null)) {
            $limit = (int) $p[$limitField];
        }
    }
    $held = count($api->get("/v1/services/$sid/$list"));
    return $limit !== null && $held >= $limit ? "$held/$limit" : null;
}

function pvekvm_backupCreate(array $params): string
{
    try {
        $full = pvekvm_limit_reached($params, 'backups', 'backup_limit');
        if ($full !== null) {
            return "backup limit reached ($full)";
        }
        return Module::order($params, 'backup_create', 'backup_create');
    } catch (Throwable $e) {
        return Module::fail($e, __FUNCTION__, $params);
    }
}

/** A backup of this service: the id must be in the service's own list (the engine checks too). */
function pvekvm_backup(array $params, string $type): string
{
    try {
        $id = Module::inputMatching('pvekvm_backup', '/^[1-9][0-9]{0,18}$/', 'a backup id', 19);
        $sid = Module::serviceId($params);
        $own = array_map(static fn (array $b): string => (string) $b['id'],
            Module::api($params)->get("/v1/services/$sid/backups"));
        if (!in_array($id, $own, true)) {
            return "backup $id is not a backup of this service";
        }
        return Module::order($params, $type, $type, ['backup_id' => (int) $id]);
    } catch (Throwable $e) {
        return Module::fail($e, $type, $params);
    }
}

function pvekvm_backupDelete(array $params): string { return pvekvm_backup($params, 'backup_delete'); }
function pvekvm_backupRestore(array $params): string { return pvekvm_backup($params, 'backup_restore'); }

function pvekvm_isoMount(array $params): string
{
    try {
        $iso = Module::inputMatching('pvekvm_iso', Module::ISO_NAME, 'an ISO file name', 205);
        return Module::order($params, 'iso_mount', 'iso_mount', ['iso' => $iso]);
    } catch (Throwable $e) {
        return Module::fail($e, __FUNCTION__, $params);
    }
}

function pvekvm_isoUnmount(array $params): string
{
    try {
        return Module::order($params, 'iso_unmount', 'iso_unmount');
    } catch (Throwable $e) {
        return Module::fail($e, __FUNCTION__, $params);
    }
}

/** The client's reverse DNS through the API's rDNS route: it checks the address is this
 * service's and the name is one the product's rdns_policy allows (422 with the reason). */
function pvekvm_rdns(array $params, bool $set): string
{
    try {
        $address = Module::input('pvekvm_address', 45);
        if (!Module::isIp($address)) {
            return 'field pvekvm_address: not an IP address';
        }
        $sid = Module::serviceId($params);
        $api = Module::api($params);
        $why = Module::blocked(Module::service($api, $sid), $sid);
        if ($why !== null) {
            return $why;
        }
        $path = "/v1/services/$sid/rdns/" . rawurlencode($address);
        if ($set) {
            $hostname = strtolower(Module::input('pvekvm_hostname', 254));
            if (!Module::isHostname($hostname)) {
                return 'field pvekvm_hostname: not a host name';
            }
            $api->put($path, ['hostname' => $hostname]);
        } else {
            $api->delete($path);
        }
        return 'success';
    } catch (Throwable $e) {
        return Module::fail($e, $set ? 'rdns_set' : 'rdns_reset', $params);
    }
}

function pvekvm_rdnsSet(array $params): string { return pvekvm_rdns($params, true); }
function pvekvm_rdnsReset(array $params): string { return pvekvm_rdns($params, false); }

// ------------------------------------------------------------------ pages

function pvekvm_ClientArea(array $params): array
{
    try {
        return ['templatefile' => 'clientarea', 'vars' => PveKvm\ClientArea::vars($params, $_GET)];
    } catch (Throwable $e) {
        return ['templatefile' => 'clientarea',
                'vars' => ['pvekvm_error' => Module::fail($e, __FUNCTION__, $params)]];
    }
}

function pvekvm_AdminServicesTabFields(array $params): array
{
    try {
        $sid = Module::serviceId($params);
        $api = Module::api($params);
        $svc = Module::service($api, $sid);
        if ($svc === null) {
            return ['pvekvm' => Module::html("pvekvm has no service $sid")];
        }
        $h = [Module::class, 'html'];
        $addresses = array_map(static fn (array $a): string => $a['address'], $svc['addresses'] ?? []);
        $state = sprintf('%s · VM %s on %s · %s · %s', $h($svc['status']), $h($svc['vmid'] ?? '-'),
            $h($svc['node'] ?? '-'), $h($svc['hostname'] ?? ''), $h(implode(', ', $addresses)));
        $ops = '';
        foreach ($api->get("/v1/services/$sid/operations", ['limit' => 5]) as $op) {
            $lines = implode("\n", array_map(static fn (array $s): string => $s['line'], $op['steps'] ?? []));
            $ops .= '<div><strong>' . $h($op['kind']) . '</strong> ' . $h($op['status'])
                . ($op['error'] ? ' — ' . $h($op['error']) : '') . ' <small>' . $h($op['created_at'] ?? '') . '</small>'
                . '<pre style="white-space:pre-wrap">' . $h($lines) . '</pre></div>';
        }
        return ['pvekvm service' => $state, 'pvekvm operations' => $ops !== '' ? $ops : 'none'];
    } catch (Throwable $e) {
        return ['pvekvm' => Module::html(Module::fail($e, __FUNCTION__, $params))];
    }
}
