// Approves with a passkey: asks the approver's authenticator for a WebAuthn
// assertion whose challenge is the digest of the approval the execution page
// prepared, with user verification required, and posts only the assertion.
// The workflow's update validator and the authority verify it; the console
// relays it and cannot make one.
'use strict';
(function () {
  const status = document.getElementById('approve-status');
  const fromB64url = (s) =>
    Uint8Array.from(atob(s.replace(/-/g, '+').replace(/_/g, '/')), (c) => c.charCodeAt(0));
  const toB64url = (buf) =>
    btoa(String.fromCharCode.apply(null, new Uint8Array(buf)))
      .replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');

  for (const form of document.querySelectorAll('form.passkey-approve')) {
    form.addEventListener('submit', async (event) => {
      if (form.dataset.signed === '1') return;
      event.preventDefault();
      status.textContent = '';
      try {
        if (!window.PublicKeyCredential) throw new Error('this browser has no passkey support');
        // No allowCredentials: a passkey is discoverable, and which
        // credential may approve is the trust store's call, not the page's.
        const cred = await navigator.credentials.get({
          publicKey: {
            challenge: fromB64url(form.dataset.challenge),
            rpId: form.dataset.rpId,
            userVerification: 'required',
            timeout: 120000,
          },
        });
        if (!cred) throw new Error('no passkey was chosen');
        const r = cred.response;
        form.elements.credential_id.value = toB64url(cred.rawId);
        form.elements.authenticator_data.value = toB64url(r.authenticatorData);
        form.elements.client_data_json.value = toB64url(r.clientDataJSON);
        form.elements.signature.value = toB64url(r.signature);
        form.elements.user_handle.value = r.userHandle ? toB64url(r.userHandle) : '';
        form.dataset.signed = '1';
        status.textContent = 'Approved with your passkey; delivering the approval…';
        form.submit();
      } catch (err) {
        status.textContent = 'Not approved: ' + (err && err.message ? err.message : String(err));
      }
    });
  }
})();
