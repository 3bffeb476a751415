// Signs a prepared approval in this browser. The approver's key is read from
// the file they choose, imported into WebCrypto as NON-extractable, used once
// to sign, and never sent: only the signature goes into the form.
'use strict';
(function () {
  const file = document.getElementById('approve-key');
  const status = document.getElementById('approve-status');
  if (!file) return;
  const fromB64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
  const toB64 = (buf) => btoa(String.fromCharCode.apply(null, new Uint8Array(buf)));

  // Any PEM block, then its label: a public key or certificate chosen by
  // mistake gets an error naming what it is.
  function pkcs8(text) {
    const m = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]+?)-----END \1-----/.exec(text);
    if (!m || m[1] !== 'PRIVATE KEY') {
      throw new Error('the file is not a PKCS#8 PEM private key' + (m ? ' (it holds ' + m[1] + ')' : ''));
    }
    return fromB64(m[2].replace(/\s+/g, ''));
  }

  for (const form of document.querySelectorAll('form.browser-approve')) {
    form.addEventListener('submit', async (event) => {
      if (form.dataset.signed === '1') return;
      event.preventDefault();
      status.textContent = '';
      try {
        if (!file.files || !file.files.length) throw new Error('choose your approver key file first');
        const der = pkcs8(await file.files[0].text());
        const key = await crypto.subtle.importKey('pkcs8', der, { name: 'Ed25519' }, false, ['sign']);
        der.fill(0);
        const sig = await crypto.subtle.sign({ name: 'Ed25519' }, key, fromB64(form.dataset.pae));
        form.elements.signature.value = toB64(sig);
        form.dataset.signed = '1';
        status.textContent = 'Signed in this browser; delivering the approval…';
        form.submit();
      } catch (err) {
        status.textContent = 'Not signed: ' + (err && err.message ? err.message : String(err));
      }
    });
  }
})();
