// Registers a passkey for approvals: navigator.credentials.create() with
// user verification and a discoverable credential required, then shows the
// `ecp keys add-passkey` command an operator runs. Nothing is posted: the
// console cannot add an approver, only the trust store can.
'use strict';
(function () {
  const form = document.getElementById('passkey-register');
  if (!form) return;
  const status = document.getElementById('register-status');
  const toB64url = (buf) =>
    btoa(String.fromCharCode.apply(null, new Uint8Array(buf)))
      .replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  const quote = (s) => "'" + s.replace(/'/g, "'\\''") + "'";

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    status.textContent = '';
    try {
      const name = form.elements.name.value.trim();
      if (!name) throw new Error('give your approver name');
      const cred = await navigator.credentials.create({
        publicKey: {
          // Registration's challenge is not checked later (the operator
          // vouches for the approver); random, so the ceremony is fresh.
          challenge: crypto.getRandomValues(new Uint8Array(32)),
          rp: { id: form.dataset.rpId, name: 'ECP console' },
          user: { id: crypto.getRandomValues(new Uint8Array(16)), name: name, displayName: name },
          pubKeyCredParams: [
            { type: 'public-key', alg: -7 },
            { type: 'public-key', alg: -8 },
            { type: 'public-key', alg: -257 },
          ],
          authenticatorSelection: { residentKey: 'required', userVerification: 'required' },
          attestation: 'none',
          timeout: 120000,
        },
      });
      if (!cred) throw new Error('no passkey was made');
      document.getElementById('register-command').textContent = [
        'ecp keys add-passkey',
        '--name ' + quote(name),
        '--rp-id ' + quote(form.dataset.rpId),
        '--origin ' + quote(form.dataset.origin),
        '--attestation-object ' + toB64url(cred.response.attestationObject),
      ].join(' ');
      document.getElementById('register-result').hidden = false;
      status.textContent = 'Passkey created. It approves nothing until an operator adds it.';
    } catch (err) {
      status.textContent = 'Not created: ' + (err && err.message ? err.message : String(err));
    }
  });
})();
