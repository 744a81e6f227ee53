<?php
/**
 * The pvekvm service API over HTTP (PHP's curl and json extensions only).
 *
 * Invariants: every request carries the billing token as a Bearer header and never logs it;
 * a path is built from integers and fixed words only (callers pass the service id WHMCS gave,
 * never one from a client's input); answers are read up to MAX_BODY bytes and decoded with a
 * bounded depth; an event is posted with one idempotency key however often it is retried.
 */

declare(strict_types=1);

namespace PveKvm;

final class ApiError extends \RuntimeException
{
    /** @param int $status HTTP status, 0 = no answer (network, timeout) */
    public function __construct(string $message, public readonly int $status = 0)
    {
        parent::__construct($message);
    }
}

final class ApiClient
{
    public const MAX_BODY = 2 * 1024 * 1024;
    public const MAX_DEPTH = 64;

    /** @var callable|null fn(string $action, string $request, string $response): void */
    private $logger;

    public function __construct(
        private readonly string $baseUrl,
        private readonly string $token,
        private readonly int $timeoutS = 15,
        ?callable $logger = null,
        private readonly float $retryDelayS = 0.5,
    ) {
        $this->logger = $logger;
    }

    /**
     * The client for a WHMCS server entry: hostname (or IP), port, SSL flag, and the billing
     * token in the Access Hash (or, if that is empty, the Password) field.
     *
     * @param array<string, mixed> $params WHMCS module parameters (server*)
     */
    public static function fromParams(array $params, ?callable $logger = null): self
    {
        $host = trim((string) ($params['serverhostname'] ?? ''));
        if ($host === '') {
            $host = trim((string) ($params['serverip'] ?? ''));
        }
        // a host name, an IPv4 address or a bracketed IPv6 address: nothing that could add a
        // path, user info or another URL
        if ($host === '' || !preg_match('/^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]{1,253})$/', $host)) {
            throw new ApiError('the server\'s hostname is missing or not a host name');
        }
        $secure = !empty($params['serversecure']) && $params['serversecure'] !== 'off';
        $port = (int) ($params['serverport'] ?? 0);
        $url = ($secure ? 'https' : 'http') . '://' . $host . ($port > 0 && $port < 65536 ? ':' . $port : '');
        $token = trim((string) ($params['serveraccesshash'] ?? ''));
        if ($token === '') {
            $token = trim((string) ($params['serverpassword'] ?? ''));
        }
        if ($token === '') {
            throw new ApiError('no billing token: put it in the server\'s Access Hash (or Password) field');
        }
        return new self($url, $token, 15, $logger);
    }

    /** @return array<mixed> */
    public function get(string $path, array $query = []): array
    {
        $url = $path . ($query ? '?' . http_build_query($query, '', '&', PHP_QUERY_RFC3986) : '');
        return $this->request('GET', $url, null);
    }

    /** @return array<mixed> */
    public function post(string $path, ?array $body = null): array
    {
        return $this->request('POST', $path, $body);
    }

    /** @return array<mixed> */
    public function put(string $path, ?array $body = null): array
    {
        return $this->request('PUT', $path, $body);
    }

    /** @return array<mixed> */
    public function delete(string $path): array
    {
        return $this->request('DELETE', $path, null);
    }

    /**
     * Post one order event; retried (same key: the engine does it once) while the API or the
     * network fails, three attempts in all. Answers the API's EventAccepted.
     *
     * @param array<string, mixed> $fields type-specific fields
     * @return array<mixed>
     */
    public function postEvent(string $type, int $serviceId, string $key, array $fields = []): array
    {
        $event = ['version' => 1, 'type' => $type, 'idempotency_key' => $key,
                  'service_id' => $serviceId] + $fields;
        $last = null;
        for ($attempt = 1; $attempt <= 3; $attempt++) {
            try {
                return $this->request('POST', '/v1/events', $event);
            } catch (ApiError $e) {
                $last = $e;
                if ($e->status !== 0 && $e->status < 500) {
                    throw $e;  // refused: the same request would be refused again
                }
                if ($attempt < 3) {
                    usleep((int) ($this->retryDelayS * $attempt * 1_000_000));
                }
            }
        }
        throw $last;
    }

    /** @return array<mixed> */
    private function request(string $method, string $path, ?array $body): array
    {
        if (!str_starts_with($path, '/v1/')) {
            throw new \InvalidArgumentException('API paths start with /v1/');
        }
        $ch = curl_init($this->baseUrl . $path);
        $received = '';
        $headers = ['Authorization: Bearer ' . $this->token, 'Accept: application/json'];
        $payload = null;
        if ($body !== null) {
            $payload = json_encode($body, JSON_UNESCAPED_SLASHES | JSON_THROW_ON_ERROR);
            $headers[] = 'Content-Type: application/json';
        }
        curl_setopt_array($ch, [
            CURLOPT_CUSTOMREQUEST => $method,
            CURLOPT_HTTPHEADER => $headers,
            CURLOPT_CONNECTTIMEOUT => 5,
            CURLOPT_TIMEOUT => $this->timeoutS,
            CURLOPT_FOLLOWLOCATION => false,
            CURLOPT_SSL_VERIFYPEER => true,
            CURLOPT_SSL_VERIFYHOST => 2,
            CURLOPT_PROTOCOLS => CURLPROTO_HTTP | CURLPROTO_HTTPS,
            CURLOPT_WRITEFUNCTION => static function ($ch, string $chunk) use (&$received): int {
                if (strlen($received) + strlen($chunk) > self::MAX_BODY) {
                    return 0;  // stop reading: curl reports a write error
                }
                $received .= $chunk;
                return strlen($chunk);
            },
        ]);
        if ($payload !== null) {
            curl_setopt($ch, CURLOPT_POSTFIELDS, $payload);
        }
        $ok = curl_exec($ch);
        $status = (int) curl_getinfo($ch, CURLINFO_RESPONSE_CODE);
        $error = curl_error($ch);
        curl_close($ch);
        $this->log($method . ' ' . $path, $payload ?? '', $ok === false ? $error : $received);
        if ($ok === false) {
            if (strlen($received) >= self::MAX_BODY) {
                throw new ApiError("the API's answer to $method $path is over " . self::MAX_BODY . ' bytes', $status);
            }
            throw new ApiError("pvekvm API unreachable ($method $path): $error", 0);
        }
        $data = $received === '' ? [] : json_decode($received, true, self::MAX_DEPTH);
        if ($status >= 400) {
            $detail = is_array($data) && isset($data['detail']) && is_string($data['detail'])
                ? $data['detail'] : "HTTP $status";
            throw new ApiError($detail, $status);
        }
        if (!is_array($data)) {
            throw new ApiError("the API's answer to $method $path is not a JSON object", $status);
        }
        return $data;
    }

    private function log(string $action, string $request, string $response): void
    {
        if ($this->logger !== null) {
            ($this->logger)($action, $request, $response);
        }
    }
}
