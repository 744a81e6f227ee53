<?php
/**
 * What the module functions share: the API client of the service's server, the service id
 * WHMCS gave, idempotency keys, the checks before an order, the client's form input.
 *
 * Invariants: the service id is always $params['serviceid'] (WHMCS checked that the logged-in
 * client owns it); nothing a client sends names a service, and every value a client sends is
 * checked against the engine's own rules before it is ordered; an answer to WHMCS is "success"
 * or one sentence billing can show.
 */

declare(strict_types=1);

namespace PveKvm;

final class Module
{
    public const NAME = 'pvekvm';
    /** What the engine accepts while a service is suspended (README "Suspension holds"). */
    public const BLOCKED_STATUSES = ['suspended', 'suspending', 'terminated', 'terminating'];
    public const SNAPSHOT_NAME = '/^[A-Za-z][A-Za-z0-9_-]{1,39}$/';
    public const SLUG = '/^[a-z0-9][a-z0-9._-]{0,63}$/';
    public const ISO_NAME = '/^[A-Za-z0-9][A-Za-z0-9._+-]{0,200}\.iso$/';
    public const HOSTNAME_LABEL = '/^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$/';
    /** WHMCS language names (its lang/*.php files) → the engine's language tags. */
    public const LANGUAGES = [
        'arabic' => 'ar', 'azerbaijani' => 'az', 'catalan' => 'ca', 'chinese' => 'zh',
        'croatian' => 'hr', 'czech' => 'cs', 'danish' => 'da', 'dutch' => 'nl', 'english' => 'en',
        'estonian' => 'et', 'farsi' => 'fa', 'french' => 'fr', 'german' => 'de', 'hebrew' => 'he',
        'hungarian' => 'hu', 'italian' => 'it', 'macedonian' => 'mk', 'norwegian' => 'nb',
        'polish' => 'pl', 'portuguese-br' => 'pt-BR', 'portuguese-pt' => 'pt-PT',
        'romanian' => 'ro', 'russian' => 'ru', 'spanish' => 'es', 'swedish' => 'sv',
        'turkish' => 'tr', 'ukranian' => 'uk', 'ukrainian' => 'uk',
    ];

    /** @param array<string, mixed> $params */
    public static function api(array $params): ApiClient
    {
        return ApiClient::fromParams($params, static function (string $action, string $request, string $response): void {
            if (str_contains($action, '/credentials')) {
                $response = '[credentials not logged]';
            }
            if (function_exists('logModuleCall')) {
                logModuleCall(self::NAME, $action, $request, substr($response, 0, 20000), '', []);
            }
        });
    }

    /** @param array<string, mixed> $params */
    public static function serviceId(array $params): int
    {
        $sid = $params['serviceid'] ?? null;
        if (!is_numeric($sid) || (int) $sid < 1 || (int) $sid > 4294967295 || (string) (int) $sid !== (string) $sid) {
            throw new ApiError('WHMCS passed no valid service id');
        }
        return (int) $sid;
    }

    /**
     * The idempotency key of this module call: WHMCS passes no id of its own for a module
     * call, so each call makes one; the API client retries the call's event with it, so a
     * retry is never a second order.
     */
    public static function callKey(int $serviceId, string $action): string
    {
        return 'whmcs:' . $serviceId . ':' . $action . ':' . bin2hex(random_bytes(8));
    }

    /** The engine's view of the service, or null when it has none. */
    public static function service(ApiClient $api, int $serviceId): ?array
    {
        try {
            return $api->get('/v1/services/' . $serviceId);
        } catch (ApiError $e) {
            if ($e->status === 404) {
                return null;
            }
            throw $e;
        }
    }

    /** Why an order other than unsuspend/terminate/package change may not run now, or null. */
    public static function blocked(?array $service, int $serviceId): ?string
    {
        if ($service === null) {
            return "pvekvm has no service $serviceId (not created yet, or created by another billing system)";
        }
        $status = (string) ($service['status'] ?? '');
        if (in_array($status, self::BLOCKED_STATUSES, true)) {
            return "service $serviceId is $status: only unsuspend, terminate and package changes are accepted";
        }
        return null;
    }

    /**
     * Post one order for the service WHMCS gave, after the engine's service is checked not to
     * be suspended or terminated; "success" or the reason.
     *
     * @param array<string, mixed> $params
     * @param array<string, mixed> $fields
     */
    public static function order(array $params, string $action, string $type, array $fields = []): string
    {
        $sid = self::serviceId($params);
        $api = self::api($params);
        $why = self::blocked(self::service($api, $sid), $sid);
        if ($why !== null) {
            return $why;
        }
        $api->postEvent($type, $sid, self::callKey($sid, $action), $fields);
        return 'success';
    }

    /** A form field the client sent by POST (module forms post; a link cannot order). */
    public static function input(string $name, int $maxLength = 255): string
    {
        if (($_SERVER['REQUEST_METHOD'] ?? 'GET') !== 'POST') {
            throw new ApiError('this action is sent by its form (POST)');
        }
        $value = $_POST[$name] ?? '';
        if (!is_string($value) || strlen($value) > $maxLength) {
            throw new ApiError("field $name: expected text of at most $maxLength characters");
        }
        return trim($value);
    }

    public static function inputMatching(string $name, string $pattern, string $what, int $maxLength = 255): string
    {
        $value = self::input($name, $maxLength);
        if (!preg_match($pattern, $value)) {
            throw new ApiError("field $name: not $what");
        }
        return $value;
    }

    /** RFC 1123 host name, at most 253 octets, not an address: its last label is not all
     * digits (the engine checks the rest). */
    public static function isHostname(string $name): bool
    {
        $name = rtrim($name, '.');
        if ($name === '' || strlen($name) > 253) {
            return false;
        }
        $labels = explode('.', $name);
        foreach ($labels as $label) {
            if (!preg_match(self::HOSTNAME_LABEL, $label)) {
                return false;
            }
        }
        return !preg_match('/^[0-9]+$/', end($labels));
    }

    /** An IPv4 or IPv6 address (core PHP only: no filter or ctype extension needed). */
    public static function isIp(string $address): bool
    {
        return $address !== '' && strlen($address) <= 45 && @inet_pton($address) !== false;
    }

    /** The engine's language tag of the client's WHMCS language, or null (mail in English). */
    public static function language(array $params): ?string
    {
        $name = strtolower((string) ($params['clientsdetails']['language'] ?? ''));
        return self::LANGUAGES[$name] ?? null;
    }

    /** The client's SSH public keys from the product's custom field "SSH Public Keys" (one
     * OpenSSH line each; blank lines dropped). The engine checks each key and refuses the
     * order with the reason when one is bad. */
    public static function sshKeys(array $params): array
    {
        return self::keyLines((string) ($params['customfields']['SSH Public Keys'] ?? ''));
    }

    /** One OpenSSH public key per line of $text, blank lines dropped. */
    public static function keyLines(string $text): array
    {
        $keys = [];
        foreach (preg_split('/\r\n|\r|\n/', $text) ?: [] as $line) {
            $line = trim($line);
            if ($line !== '') {
                $keys[] = $line;
            }
        }
        return $keys;
    }

    /** A module setting (configoptionN) or, when the client chose one at order, the
     * configurable option of that name. */
    public static function option(array $params, int $index, string $configurableName): string
    {
        $chosen = $params['configoptions'][$configurableName] ?? '';
        if (is_string($chosen) && trim($chosen) !== '') {
            return trim($chosen);
        }
        return trim((string) ($params['configoption' . $index] ?? ''));
    }

    /** Record a failure in WHMCS's module log and answer its message. */
    public static function fail(\Throwable $e, string $action, array $params): string
    {
        if (function_exists('logModuleCall')) {
            $safe = array_diff_key($params, array_flip(['password', 'serverpassword', 'serveraccesshash']));
            logModuleCall(self::NAME, $action, $safe, $e->getMessage(), get_class($e), []);
        }
        return $e instanceof ApiError ? $e->getMessage() : 'pvekvm module error: ' . get_class($e);
    }

    public static function html(mixed $value): string
    {
        return htmlspecialchars((string) $value, ENT_QUOTES | ENT_SUBSTITUTE, 'UTF-8');
    }
}
