// The console page: noVNC (Debian's novnc package, served under ./novnc/) connected to this
// proxy's websocket with the page's own query (the single-use console token). The proxy
// answers RFB's security handshake itself (type None): no password is asked here.
import RFB from './novnc/core/rfb.js';

const query = new URLSearchParams(location.search);
const status = document.getElementById('status');
let closeReason = '';

const scheme = location.protocol === 'https:' ? 'wss://' : 'ws://';
const base = location.pathname.replace(/[^/]*$/, '');
const url = scheme + location.host + base + 'websocket?' + query.toString();
// The socket is opened here and handed to noVNC, which does not pass the close frame's
// reason on: the page notes it to say why a session ended.
const sock = new WebSocket(url, ['binary']);
sock.addEventListener('close', (e) => { closeReason = e.reason || ''; });
const rfb = new RFB(document.getElementById('screen'), sock);
rfb.scaleViewport = false;
rfb.resizeSession = false;
window.consoleRfb = rfb;

function state(name, text) {
    document.body.dataset.state = name;
    status.textContent = text;
}

rfb.addEventListener('connect', () => { state('connected', 'Connected'); rfb.focus(); });
rfb.addEventListener('desktopname', (e) => {
    document.title = e.detail.name + ' - console';
    if (document.body.dataset.state === 'connected') status.textContent = 'Connected: ' + e.detail.name;
});
rfb.addEventListener('disconnect', (e) => {
    state('disconnected', 'Disconnected' + (closeReason ? ': ' + closeReason : (e.detail.clean ? '' : ' (connection lost)')));
});
rfb.addEventListener('securityfailure', (e) => state('disconnected', 'Refused: ' + (e.detail.reason || '')));
document.getElementById('cad').addEventListener('click', () => { rfb.sendCtrlAltDel(); rfb.focus(); });
document.getElementById('paste').addEventListener('click', () => {
    const clip = document.getElementById('clip');
    rfb.clipboardPasteFrom(clip.value);
    clip.value = '';
    rfb.focus();
});
