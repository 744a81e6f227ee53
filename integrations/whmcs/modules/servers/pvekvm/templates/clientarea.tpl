{* pvekvm client area. Every value is escaped where it is written (|escape:'html'); the
   forms post to this service's own page (WHMCS checks the service is the client's). *}
{if isset($pvekvm_error)}
<div class="alert alert-danger">{$pvekvm_error|escape:'html'}</div>
{else}
{assign var=pvekvm_page value="clientarea.php?action=productdetails&amp;id={$pvekvm_serviceid|escape:'url'}"}
<div class="pvekvm">
  {if $pvekvm_blocked}<div class="alert alert-warning">{$pvekvm_blocked|escape:'html'}</div>{/if}
  <table class="table table-condensed">
    <tr><th>Status</th><td>{$pvekvm_status|escape:'html'}{if $pvekvm_throttled} (throttled in {$pvekvm_throttled|escape:'html'}){/if}</td></tr>
    <tr><th>Host name</th><td>{$pvekvm_hostname|escape:'html'}</td></tr>
    <tr><th>Package</th><td>{$pvekvm_product|escape:'html'}</td></tr>
    <tr><th>Power</th><td>{$pvekvm_power|escape:'html'}{if $pvekvm_uptime} · up {$pvekvm_uptime|escape:'html'}{/if}{if $pvekvm_cpu} · CPU {$pvekvm_cpu|escape:'html'} · RAM {$pvekvm_memory|escape:'html'}{/if}</td></tr>
    <tr><th>Addresses</th><td>
      {foreach $pvekvm_addresses as $a}
        <div>{$a.address|escape:'html'}{if $a.prefix} ({$a.prefix|escape:'html'}){/if}{if !$a.primary} · additional{/if}
        {if !$pvekvm_blocked}
        <form method="post" action="{$pvekvm_page}" class="form-inline" style="display:inline">
          <input type="hidden" name="token" value="{$token|default:''|escape:'html'}">
          <input type="hidden" name="modop" value="custom"><input type="hidden" name="a" value="rdnsSet">
          <input type="hidden" name="pvekvm_address" value="{$a.address|escape:'html'}">
          <input type="text" name="pvekvm_hostname" maxlength="253" placeholder="reverse DNS name">
          <button type="submit" class="btn btn-xs btn-default">Set rDNS</button>
        </form>
        <form method="post" action="{$pvekvm_page}" style="display:inline">
          <input type="hidden" name="token" value="{$token|default:''|escape:'html'}">
          <input type="hidden" name="modop" value="custom"><input type="hidden" name="a" value="rdnsReset">
          <input type="hidden" name="pvekvm_address" value="{$a.address|escape:'html'}">
          <button type="submit" class="btn btn-xs btn-default">Reset rDNS</button>
        </form>
        {/if}</div>
      {/foreach}
    </td></tr>
    {if $pvekvm_operation}
    <tr><th>In progress</th><td>{$pvekvm_operation.kind|escape:'html'} ({$pvekvm_operation.status|escape:'html'})<pre>{$pvekvm_operation.last_step|escape:'html'}</pre></td></tr>
    {/if}
    <tr><th>Access</th><td>
      {if isset($pvekvm_credentials)}
        user <code>{$pvekvm_credentials.username|escape:'html'}</code> · password <code>{$pvekvm_credentials.password|escape:'html'}</code>
      {else}
        <a href="{$pvekvm_page}&amp;pvekvm_view=credentials">Show the login</a>
      {/if}
      {if $pvekvm_console_enabled && !$pvekvm_blocked}
        · {if isset($pvekvm_console_link) && $pvekvm_console_link}<a href="{$pvekvm_console_link|escape:'html'}" target="_blank" rel="noopener noreferrer">Open the console</a>{else}<a href="{$pvekvm_page}&amp;pvekvm_view=console">Console</a>{/if}
      {/if}
    </td></tr>
    <tr><th>Traffic this month</th><td>in {$pvekvm_usage.in|escape:'html'} · out {$pvekvm_usage.out|escape:'html'} · {$pvekvm_usage.total|escape:'html'} of {$pvekvm_usage.quota|escape:'html'}{if $pvekvm_usage.percent !== null} ({$pvekvm_usage.percent|escape:'html'} %){/if}</td></tr>
  </table>

  <h4>Graphs ({$pvekvm_timeframe|escape:'html'})</h4>
  <div>{foreach $pvekvm_timeframes as $tf}<a href="{$pvekvm_page}&amp;pvekvm_timeframe={$tf|escape:'url'}">{$tf|escape:'html'}</a> {/foreach}</div>
  {foreach $pvekvm_graphs as $g}
    <figure><figcaption>{$g.metric|escape:'html'} (peak {$g.peak|escape:'html'})</figcaption>
      <svg viewBox="0 0 300 60" width="300" height="60" role="img"><polyline fill="none" stroke="currentColor" points="{$g.points|escape:'html'}"/></svg>
    </figure>
  {/foreach}

  {if !$pvekvm_blocked}
  <h4>Snapshots ({$pvekvm_snapshot_count|escape:'html'}/{$pvekvm_snapshot_limit|escape:'html'})</h4>
  <table class="table table-condensed">
    {foreach $pvekvm_snapshots as $s}
    <tr><td>{$s.name|escape:'html'}</td><td>{$s.description|escape:'html'}</td><td>expires {$s.expires_at|escape:'html'}</td><td>
      {foreach ['snapshotRollback' => 'Roll back', 'snapshotDelete' => 'Delete'] as $fn => $label}
      <form method="post" action="{$pvekvm_page}" style="display:inline">
        <input type="hidden" name="token" value="{$token|default:''|escape:'html'}">
        <input type="hidden" name="modop" value="custom"><input type="hidden" name="a" value="{$fn|escape:'html'}">
        <input type="hidden" name="pvekvm_snapshot" value="{$s.name|escape:'html'}">
        <button type="submit" class="btn btn-xs btn-default">{$label|escape:'html'}</button>
      </form>
      {/foreach}
    </td></tr>
    {/foreach}
  </table>
  {if $pvekvm_snapshot_count < $pvekvm_snapshot_limit}
  <form method="post" action="{$pvekvm_page}" class="form-inline">
    <input type="hidden" name="token" value="{$token|default:''|escape:'html'}">
    <input type="hidden" name="modop" value="custom"><input type="hidden" name="a" value="snapshotCreate">
    <input type="text" name="pvekvm_snapshot" maxlength="40" pattern="[A-Za-z][A-Za-z0-9_-]{ldelim}1,39{rdelim}" placeholder="name" required>
    <input type="text" name="pvekvm_description" maxlength="255" placeholder="description">
    <button type="submit" class="btn btn-sm btn-default">Take a snapshot</button>
  </form>
  {/if}

  <h4>Backups ({$pvekvm_backup_count|escape:'html'}/{$pvekvm_backup_limit|escape:'html'})</h4>
  <table class="table table-condensed">
    {foreach $pvekvm_backups as $b}
    <tr><td>{$b.created_at|escape:'html'}</td><td>{$b.size|escape:'html'}</td><td>{$b.note|escape:'html'}{if $b.scheduled} (scheduled){/if}</td><td>
      {foreach ['backupRestore' => 'Restore', 'backupDelete' => 'Delete'] as $fn => $label}
      <form method="post" action="{$pvekvm_page}" style="display:inline">
        <input type="hidden" name="token" value="{$token|default:''|escape:'html'}">
        <input type="hidden" name="modop" value="custom"><input type="hidden" name="a" value="{$fn|escape:'html'}">
        <input type="hidden" name="pvekvm_backup" value="{$b.id|escape:'html'}">
        <button type="submit" class="btn btn-xs btn-default">{$label|escape:'html'}</button>
      </form>
      {/foreach}
    </td></tr>
    {/foreach}
  </table>
  {if $pvekvm_backup_count < $pvekvm_backup_limit}
  <form method="post" action="{$pvekvm_page}">
    <input type="hidden" name="token" value="{$token|default:''|escape:'html'}">
    <input type="hidden" name="modop" value="custom"><input type="hidden" name="a" value="backupCreate">
    <button type="submit" class="btn btn-sm btn-default">Back up now</button>
  </form>
  {/if}

  {if $pvekvm_isos}
  <h4>ISO image</h4>
  <form method="post" action="{$pvekvm_page}" class="form-inline">
    <input type="hidden" name="token" value="{$token|default:''|escape:'html'}">
    <input type="hidden" name="modop" value="custom"><input type="hidden" name="a" value="isoMount">
    <select name="pvekvm_iso">
      {foreach $pvekvm_isos as $group}<optgroup label="{$group.group|escape:'html'}">{foreach $group.isos as $iso}<option value="{$iso|escape:'html'}">{$iso|escape:'html'}</option>{/foreach}</optgroup>{/foreach}
    </select>
    <button type="submit" class="btn btn-sm btn-default">Mount</button>
  </form>
  {/if}

  <h4>Rescue mode</h4>
  {if $pvekvm_rescue}
  <p>Your server boots the rescue system now, its disks attached. Leave rescue mode to boot from its disk again.</p>
  <form method="post" action="{$pvekvm_page}">
    <input type="hidden" name="token" value="{$token|default:''|escape:'html'}">
    <input type="hidden" name="modop" value="custom"><input type="hidden" name="a" value="rescueOff">
    <button type="submit" class="btn btn-sm btn-default">Leave rescue mode</button>
  </form>
  {else}
  <form method="post" action="{$pvekvm_page}">
    <input type="hidden" name="token" value="{$token|default:''|escape:'html'}">
    <input type="hidden" name="modop" value="custom"><input type="hidden" name="a" value="rescueOn">
    <button type="submit" class="btn btn-sm btn-default">Boot the rescue system</button>
  </form>
  {/if}

  <h4>Reinstall</h4>
  {if !$pvekvm_rescue}
  <form method="post" action="{$pvekvm_page}">
    <input type="hidden" name="token" value="{$token|default:''|escape:'html'}">
    <input type="hidden" name="modop" value="custom"><input type="hidden" name="a" value="reinstall">
    <select name="pvekvm_template">{foreach $pvekvm_templates as $t}<option value="{$t.name|escape:'html'}"{if $t.current} selected{/if}>{$t.name|escape:'html'} ({$t.os_family|escape:'html'}, user {$t.os_user|escape:'html'}){if $t.current} · installed now{/if}</option>{/foreach}</select>
    <textarea name="pvekvm_ssh_keys" rows="3" cols="60" placeholder="SSH public keys, one per line (empty: keep the current ones)"></textarea>
    <button type="submit" class="btn btn-sm btn-danger">Reinstall (erases the disk)</button>
  </form>
  {if $pvekvm_isos}
  <form method="post" action="{$pvekvm_page}" class="form-inline">
    <input type="hidden" name="token" value="{$token|default:''|escape:'html'}">
    <input type="hidden" name="modop" value="custom"><input type="hidden" name="a" value="reinstallIso">
    <select name="pvekvm_iso">
      {foreach $pvekvm_isos as $group}<optgroup label="{$group.group|escape:'html'}">{foreach $group.isos as $iso}<option value="{$iso|escape:'html'}">{$iso|escape:'html'}</option>{/foreach}</optgroup>{/foreach}
    </select>
    <button type="submit" class="btn btn-sm btn-danger">Install from this ISO (empty disks; install through the console)</button>
  </form>
  {/if}
  {else}<p>Leave rescue mode first.</p>{/if}

  <h4>Access keys</h4>
  {if !$pvekvm_password_login}<p>SSH password login is off for this package: log in with your SSH keys.</p>{/if}
  <ul>{foreach $pvekvm_ssh_keys as $k}<li><code>{$k.fingerprint|escape:'html'}</code> {$k.type|escape:'html'} ({$k.bits|escape:'html'} bits) {$k.comment|escape:'html'}</li>{foreachelse}<li>no SSH keys</li>{/foreach}</ul>
  <form method="post" action="{$pvekvm_page}">
    <input type="hidden" name="token" value="{$token|default:''|escape:'html'}">
    <input type="hidden" name="modop" value="custom"><input type="hidden" name="a" value="resetPassword">
    <textarea name="pvekvm_ssh_keys" rows="3" cols="60" placeholder="new SSH public keys, one per line (empty: keep the current ones)"></textarea>
    <button type="submit" class="btn btn-sm btn-default">New password (and keys)</button>
  </form>

  <h4>Firewall rules</h4>
  {if $pvekvm_fw_allowed > 0}
  <table class="table table-condensed">
    {foreach $pvekvm_fw_rules as $r}
    <tr><td>{$r.direction|escape:'html'}</td><td>{$r.action|escape:'html'}</td><td>{$r.proto|escape:'html'}</td><td>{$r.dport|escape:'html'}</td><td>{$r.source|escape:'html'}</td><td>{$r.dest|escape:'html'}</td><td>{$r.comment|escape:'html'}</td><td>{if !$r.enable}off{/if}</td></tr>
    {foreachelse}<tr><td>no rules of your own</td></tr>
    {/foreach}
  </table>
  {if $pvekvm_fw_pending}<p>Changes are being applied.</p>{/if}
  <form method="post" action="{$pvekvm_page}">
    <input type="hidden" name="token" value="{$token|default:''|escape:'html'}">
    <input type="hidden" name="modop" value="custom"><input type="hidden" name="a" value="firewallRulesSet">
    <textarea name="pvekvm_rules" rows="6" cols="80">{$pvekvm_fw_json|escape:'html'}</textarea>
    <button type="submit" class="btn btn-sm btn-default">Save the rules (at most {$pvekvm_fw_allowed|escape:'html'})</button>
  </form>
  {else}<p>This package allows no firewall rules of your own.</p>{/if}

  <h4>Host name</h4>
  <form method="post" action="{$pvekvm_page}" class="form-inline">
    <input type="hidden" name="token" value="{$token|default:''|escape:'html'}">
    <input type="hidden" name="modop" value="custom"><input type="hidden" name="a" value="hostnameChange">
    <input type="text" name="pvekvm_hostname" maxlength="253" value="{$pvekvm_hostname|escape:'html'}" required>
    <button type="submit" class="btn btn-sm btn-default">Rename</button>
  </form>
  {/if}

  <h4>Mail language</h4>
  <form method="post" action="{$pvekvm_page}" class="form-inline">
    <input type="hidden" name="token" value="{$token|default:''|escape:'html'}">
    <input type="hidden" name="modop" value="custom"><input type="hidden" name="a" value="languageChange">
    <select name="pvekvm_language">{foreach $pvekvm_languages as $l}<option value="{$l|escape:'html'}"{if $l == $pvekvm_language} selected{/if}>{$l|escape:'html'}</option>{/foreach}</select>
    <button type="submit" class="btn btn-sm btn-default">Use for mail</button>
  </form>
</div>
{/if}
