<?php
/**
 * Calls one module function as WHMCS does: `php call.php < {"function": "CreateAccount",
 * "params": {...}, "get": {...}, "post": {...}}` runs pvekvm_CreateAccount($params) with
 * $_GET/$_POST/$_SERVER['REQUEST_METHOD'] set, and prints {"return": ..., "html": ...}; a
 * ClientArea answer is rendered with Smarty 3 (Debian's smarty3) when it is installed, as
 * WHMCS renders the module's template.
 */

declare(strict_types=1);

error_reporting(E_ALL);  // the module's code: any notice, warning or deprecation fails the test

require __DIR__ . '/stub/init.php';
$module = getenv('PVEKVM_WHMCS_MODULE') ?: __DIR__ . '/../../integrations/whmcs/modules/servers/pvekvm';
require $module . '/pvekvm.php';

$call = json_decode((string) file_get_contents('php://stdin'), true, 64, JSON_THROW_ON_ERROR);
$_GET = $call['get'] ?? [];
$_POST = $call['post'] ?? [];
$_REQUEST = $_GET + $_POST;
$_SERVER['REQUEST_METHOD'] = $_POST ? 'POST' : 'GET';
$function = 'pvekvm_' . $call['function'];
$result = isset($call['params']) ? $function($call['params']) : $function();
$html = null;
if (is_array($result) && isset($result['templatefile'])) {
    $smarty = '/usr/share/php/smarty3/Smarty.class.php';
    if (is_file($smarty)) {
        error_reporting(E_ALL & ~E_DEPRECATED);  // Smarty 3.1's own dynamic properties on PHP 8.2
        require_once $smarty;
        $tpl = new Smarty();
        $tpl->setCompileDir(getenv('PVEKVM_SMARTY_DIR') ?: sys_get_temp_dir() . '/pvekvm-smarty');
        $tpl->assign($result['vars']);
        $tpl->assign('token', 'csrf-token');
        $html = $tpl->fetch($module . '/templates/' . $result['templatefile'] . '.tpl');
    }
}
echo json_encode(['return' => $result, 'html' => $html], JSON_UNESCAPED_SLASHES | JSON_PARTIAL_OUTPUT_ON_ERROR);
