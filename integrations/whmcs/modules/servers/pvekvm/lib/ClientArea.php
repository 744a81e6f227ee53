<?php
/**
 * The client area's template variables, all read from the API for the service WHMCS passes.
 * Values are plain data (the template escapes every one); nothing from the request but the
 * choice of view (a fixed list) and of time frame (a fixed list) is used.
 */

declare(strict_types=1);

namespace PveKvm;

final class ClientArea
{
    public const TIMEFRAMES = ['hour', 'day', 'week', 'month', 'year'];
    public const GRAPHS = ['cpu' => 'cpu', 'network' => 'netin'];

    /**
     * @param array<string, mixed> $params
     * @param array<string, mixed> $query the request's query string ($_GET)
     * @return array<string, mixed>
     */
    public static function vars(array $params, array $query): array
    {
        $sid = Module::serviceId($params);
        $api = Module::api($params);
        $svc = Module::service($api, $sid);
        if ($svc === null) {
            return ['pvekvm_error' => 'Your server is not set up yet.'];
        }
        $view = is_string($query['pvekvm_view'] ?? null) ? $query['pvekvm_view'] : '';
        $timeframe = in_array($query['pvekvm_timeframe'] ?? null, self::TIMEFRAMES, true)
            ? $query['pvekvm_timeframe'] : 'hour';
        $catalog = $api->get('/v1/products');
        $product = null;
        foreach ($catalog['products'] ?? [] as $p) {
            if ($p['name'] === ($svc['product'] ?? null)) {
                $product = $p;
            }
        }
        $live = $svc['live'] ?? null;
        $vars = [
            'pvekvm_serviceid' => $sid,
            'pvekvm_status' => (string) $svc['status'],
            'pvekvm_hostname' => (string) $svc['hostname'],
            'pvekvm_product' => (string) ($svc['product'] ?? ''),
            'pvekvm_power' => $live ? (string) $live['power'] : ($svc['proxmox_unreachable'] ? 'unknown (Proxmox not answering)' : 'none'),
            'pvekvm_uptime' => $live ? self::duration((int) $live['uptime_s']) : '',
            'pvekvm_cpu' => $live ? sprintf('%.1f %%', 100 * (float) $live['cpu']) : '',
            'pvekvm_memory' => $live ? sprintf('%s / %s', self::bytes((int) $live['mem_bytes']), self::bytes((int) $live['maxmem_bytes'])) : '',
            'pvekvm_addresses' => array_map(static fn (array $a): array => [
                'address' => (string) $a['address'], 'version' => (int) $a['version'],
                'primary' => (bool) ($a['primary'] ?? true), 'prefix' => (string) ($a['routed_prefix'] ?? '')],
                $svc['addresses'] ?? []),
            'pvekvm_operation' => isset($svc['operation']) ? [
                'kind' => (string) $svc['operation']['kind'], 'status' => (string) $svc['operation']['status'],
                'last_step' => (string) ($svc['operation']['last_step'] ?? '')] : null,
            'pvekvm_blocked' => Module::blocked($svc, $sid),
            'pvekvm_throttled' => (string) ($svc['throttled_period'] ?? ''),
            'pvekvm_templates' => self::templates($api, $sid),
            'pvekvm_rescue' => !empty($svc['rescue']),
            'pvekvm_password_login' => (bool) ($svc['password_login'] ?? true),
            'pvekvm_ssh_keys' => array_map(static fn (array $k): array => [
                'type' => (string) $k['type'], 'bits' => (int) $k['bits'],
                'fingerprint' => (string) $k['fingerprint'], 'comment' => (string) $k['comment']],
                $svc['ssh_keys'] ?? []),
            'pvekvm_language' => (string) ($svc['language'] ?? ''),
            'pvekvm_languages' => array_values(array_unique(Module::LANGUAGES)),
            'pvekvm_snapshot_limit' => (int) ($product['snapshot_limit'] ?? 0),
            'pvekvm_backup_limit' => (int) ($product['backup_limit'] ?? 0),
            'pvekvm_timeframe' => $timeframe,
            'pvekvm_timeframes' => self::TIMEFRAMES,
        ];
        $vars['pvekvm_snapshots'] = array_map(static fn (array $s): array => [
            'name' => (string) $s['name'], 'description' => (string) $s['description'],
            'created_at' => (string) ($s['created_at'] ?? ''), 'expires_at' => (string) $s['expires_at']],
            $api->get("/v1/services/$sid/snapshots"));
        $vars['pvekvm_backups'] = array_map(static fn (array $b): array => [
            'id' => (int) $b['id'], 'size' => self::bytes((int) $b['size_bytes']), 'note' => (string) $b['note'],
            'scheduled' => (bool) $b['scheduled'], 'created_at' => (string) ($b['created_at'] ?? '')],
            $api->get("/v1/services/$sid/backups"));
        $fw = $api->get("/v1/services/$sid/firewall-rules");
        $vars['pvekvm_fw_allowed'] = (int) ($fw['allowed'] ?? 0);
        $vars['pvekvm_fw_pending'] = (bool) ($fw['pending'] ?? false);
        $vars['pvekvm_fw_rules'] = array_map(static fn (array $r): array => [
            'direction' => (string) $r['direction'], 'action' => (string) $r['action'],
            'proto' => (string) ($r['proto'] ?? ''), 'dport' => (string) ($r['dport'] ?? ''),
            'source' => (string) ($r['source'] ?? ''), 'dest' => (string) ($r['dest'] ?? ''),
            'comment' => (string) ($r['comment'] ?? ''), 'enable' => (bool) ($r['enable'] ?? true)],
            $fw['rules'] ?? []);
        $vars['pvekvm_fw_json'] = json_encode($fw['rules'] ?? [], JSON_UNESCAPED_SLASHES | JSON_PRETTY_PRINT);
        $vars['pvekvm_snapshot_count'] = count($vars['pvekvm_snapshots']);
        $vars['pvekvm_backup_count'] = count($vars['pvekvm_backups']);
        $vars['pvekvm_usage'] = self::usage($api, $sid, $product);
        $vars['pvekvm_graphs'] = $svc['vmid'] ? self::graphs($api, $sid, $timeframe) : [];
        $vars['pvekvm_isos'] = !empty($product['iso_storage']) ? self::isos($api, (string) $product['iso_storage']) : [];
        $vars['pvekvm_console_enabled'] = self::consoleUrl($params) !== null;
        if ($view === 'credentials') {
            $creds = $api->get("/v1/services/$sid/credentials");  // audit-logged by the API
            $vars['pvekvm_credentials'] = ['username' => (string) ($creds['username'] ?? ''),
                                           'password' => (string) ($creds['password'] ?? '')];
        }
        if ($view === 'console' && $vars['pvekvm_blocked'] === null) {
            $vars['pvekvm_console_link'] = self::consoleLink($api, $sid, $params);
        }
        return $vars;
    }

    /** The OS picker: the templates the service's product offers (name, OS family, user;
     * the one installed now marked current). */
    private static function templates(ApiClient $api, int $sid): array
    {
        $offer = $api->get("/v1/services/$sid/templates");
        return array_map(static fn (array $t): array => [
            'name' => (string) $t['name'], 'os_family' => (string) ($t['os_family'] ?? ''),
            'os_user' => (string) ($t['os_user'] ?? ''), 'current' => (bool) ($t['current'] ?? false)],
            $offer['templates'] ?? []);
    }

    /** The console proxy's page, when the product names one (https or http only). */
    public static function consoleUrl(array $params): ?string
    {
        $url = trim((string) ($params['configoption5'] ?? ''));
        return preg_match('#^https?://[^\s"\'<>]+$#', $url) ? $url : null;
    }

    /**
     * A link to the console page with a short-lived token of the client's own service (a
     * client token: it reads this service only, and ends with the service's life).
     */
    private static function consoleLink(ApiClient $api, int $sid, array $params): ?string
    {
        $url = self::consoleUrl($params);
        if ($url === null) {
            return null;
        }
        $token = $api->post("/v1/services/$sid/client-token", ['ttl_s' => 300]);
        return $url . (str_contains($url, '?') ? '&' : '?') . 'service=' . $sid
            . '#token=' . rawurlencode((string) $token['token']);
    }

    /** This UTC month's traffic against the product's quota. */
    private static function usage(ApiClient $api, int $sid, ?array $product): array
    {
        $from = gmdate('Y-m-01\T00:00:00\Z');
        $to = gmdate('Y-m-d\TH:i:s\Z', time() + 3600);
        $u = $api->get("/v1/services/$sid/usage", ['from' => $from, 'to' => $to]);
        $used = (int) $u['bytes_in'] + (int) $u['bytes_out'];
        $quota = isset($product['traffic_quota_gb']) ? (int) $product['traffic_quota_gb'] * 1_000_000_000 : 0;
        return ['in' => self::bytes((int) $u['bytes_in']), 'out' => self::bytes((int) $u['bytes_out']),
                'total' => self::bytes($used), 'quota' => $quota > 0 ? self::bytes($quota) : 'unlimited',
                'percent' => $quota > 0 ? min(100, (int) round(100 * $used / $quota)) : null];
    }

    /** Each graph as SVG polyline points (numbers only) on a 300×60 box. */
    private static function graphs(ApiClient $api, int $sid, string $timeframe): array
    {
        $out = [];
        foreach (self::GRAPHS as $metric => $field) {
            try {
                $g = $api->get("/v1/services/$sid/graphs", ['metric' => $metric, 'timeframe' => $timeframe]);
            } catch (ApiError) {
                continue;  // Proxmox not answering: the page shows the rest
            }
            $values = array_map(static fn (array $p): float => (float) ($p['values'][$field] ?? 0), $g['points'] ?? []);
            $max = $values ? max(max($values), 1e-9) : 1.0;
            $n = max(count($values) - 1, 1);
            $points = [];
            foreach ($values as $i => $v) {
                $points[] = sprintf('%.1f,%.1f', 300 * $i / $n, 60 - 58 * $v / $max);
            }
            $out[] = ['metric' => $metric, 'points' => implode(' ', $points),
                      'peak' => $metric === 'cpu' ? sprintf('%.1f %%', 100 * $max) : self::bytes((int) $max) . '/s'];
        }
        return $out;
    }

    private static function isos(ApiClient $api, string $storage): array
    {
        try {
            $lists = $api->get('/v1/isos');
        } catch (ApiError) {
            return [];
        }
        foreach ($lists as $list) {
            if (($list['storage'] ?? null) === $storage) {
                return array_map(static fn (array $g): array => ['group' => (string) $g['group'],
                    'isos' => array_map('strval', $g['isos'])], $list['groups']);
            }
        }
        return [];
    }

    public static function bytes(int $n): string
    {
        $units = ['B', 'KB', 'MB', 'GB', 'TB', 'PB'];
        $i = 0;
        $v = (float) $n;
        while ($v >= 1000 && $i < count($units) - 1) {
            $v /= 1000;
            $i++;
        }
        return $i === 0 ? "$n B" : sprintf('%.1f %s', $v, $units[$i]);
    }

    public static function duration(int $s): string
    {
        return sprintf('%dd %02dh %02dm', intdiv($s, 86400), intdiv($s % 86400, 3600), intdiv($s % 3600, 60));
    }
}
