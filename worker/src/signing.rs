//! Message signing as the settings ask for it (Celery's `auth` serializer, what
//! `app.setup_security()` turns on): the serializers for what celeriac writes and the verifier
//! for what it reads.
//!
//! * `task_serializer = auth`: retries, canvas messages and remote-control requests and
//!   replies are signed; `result_serializer = auth`: results, chord parts, saved groups;
//!   `event_serializer = auth`: events. Each needs `security_key` and `security_certificate`.
//! * `accept_content` (or `result_accept_content`) naming `auth`: signed messages are checked
//!   against `security_cert_store`. With `auth` the only accepted type, unsigned task messages
//!   are dead-lettered, unsigned control requests ignored and unsigned results refused.
//! * `security_*` set while nothing says `auth` is an error, so a deployment that meant to
//!   sign never runs unsigned by mistake (Celery's `setup_security()` refuses it too).

use std::sync::Arc;

use anyhow::{bail, Context};
use celeriac_broker_bridge::signing::{BodySerializer, CertStore, Signatures, Signer, Verifier};

use crate::config::{SerializerName, Settings};

/// The serializers and verifier of a worker.
#[derive(Debug, Clone, Default)]
pub(crate) struct Signing {
    /// Retries, canvas messages, control requests and replies (`task_serializer`).
    pub tasks: BodySerializer,
    /// Results (`result_serializer`).
    pub results: BodySerializer,
    /// Events (`event_serializer`).
    pub events: BodySerializer,
    /// Checks signed messages, when any accept list names `auth`.
    pub verifier: Option<Arc<Verifier>>,
    /// `accept_content` has a type besides `auth`: unsigned messages are accepted.
    pub unsigned_tasks: bool,
    /// The result accept list has a type besides `auth`.
    pub unsigned_results: bool,
}

fn is_auth(name: &str) -> bool {
    matches!(name.trim(), "auth" | "application/data")
}

impl Signing {
    /// Build from the settings, loading keys and certificates (errors name the setting).
    pub(crate) fn from_settings(s: &Settings) -> anyhow::Result<Self> {
        let result_accept = s.effective_result_accept_content();
        let accepts_auth = s
            .accept_content
            .iter()
            .chain(result_accept)
            .any(|a| is_auth(a));
        let writes_auth = [s.task_serializer, s.result_serializer, s.event_serializer]
            .contains(&SerializerName::Auth);
        let configured = s.security_key.is_some()
            || s.security_certificate.is_some()
            || s.security_cert_store.is_some();
        let unsigned_tasks = s.accept_content.iter().any(|a| !is_auth(a));
        let unsigned_results = result_accept.iter().any(|a| !is_auth(a));
        if !accepts_auth && !writes_auth {
            if configured {
                bail!(
                    "CELERY_SECURITY_* is set but nothing is signed or checked: set \
                     CELERY_TASK_SERIALIZER=auth and CELERY_ACCEPT_CONTENT=auth (as Celery's \
                     setup_security() requires), or unset the security settings"
                );
            }
            return Ok(Signing {
                unsigned_tasks,
                unsigned_results,
                ..Signing::default()
            });
        }
        let signer = if writes_auth {
            let (Some(key), Some(cert)) = (&s.security_key, &s.security_certificate) else {
                bail!(
                    "a serializer is `auth`: CELERY_SECURITY_KEY and \
                     CELERY_SECURITY_CERTIFICATE must name the signing key and its certificate"
                );
            };
            let password = s.security_key_password.as_ref().map(|p| p.expose());
            let signer = Signer::from_files(key, password, cert, s.security_digest)
                .context("CELERY_SECURITY_KEY / CELERY_SECURITY_CERTIFICATE")?;
            Some(Arc::new(signer))
        } else {
            None
        };
        let verifier = if accepts_auth {
            let Some(store) = &s.security_cert_store else {
                bail!(
                    "accept_content names `auth`: CELERY_SECURITY_CERT_STORE must name the \
                     certificates of trusted signers"
                );
            };
            let store = CertStore::load(store).context("CELERY_SECURITY_CERT_STORE")?;
            Some(Arc::new(Verifier::new(store, s.security_digest)))
        } else {
            None
        };
        let serializer = |name: SerializerName| match (name, &signer) {
            (SerializerName::Auth, Some(signer)) => BodySerializer::Auth(signer.clone()),
            _ => BodySerializer::Json,
        };
        Ok(Signing {
            tasks: serializer(s.task_serializer),
            results: serializer(s.result_serializer),
            events: serializer(s.event_serializer),
            verifier,
            unsigned_tasks,
            unsigned_results,
        })
    }

    /// The verifier, borrowed.
    pub(crate) fn verifier(&self) -> Option<&Verifier> {
        self.verifier.as_deref()
    }

    /// How task messages and remote control are written and read (`task_serializer`,
    /// `accept_content`).
    pub(crate) fn for_tasks(&self) -> Signatures<'_> {
        Signatures {
            serializer: &self.tasks,
            verifier: self.verifier(),
            allow_unsigned: self.unsigned_tasks,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn keys() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../proto-fixtures/fixtures/signed")
    }

    fn signed_settings() -> Settings {
        Settings {
            task_serializer: SerializerName::Auth,
            result_serializer: SerializerName::Auth,
            accept_content: vec!["auth".into()],
            security_key: Some(keys().join("key.pem")),
            security_certificate: Some(keys().join("cert.pem")),
            security_cert_store: Some(keys().join("store").to_string_lossy().into_owned()),
            ..Settings::default()
        }
    }

    #[test]
    fn plain_json_by_default() {
        let s = Signing::from_settings(&Settings::default()).unwrap();
        assert!(!s.tasks.is_signed() && s.verifier.is_none() && s.unsigned_tasks);
    }

    #[test]
    fn auth_signs_and_checks_and_refuses_unsigned() {
        let s = Signing::from_settings(&signed_settings()).unwrap();
        assert!(s.tasks.is_signed() && s.results.is_signed() && !s.events.is_signed());
        assert!(s.verifier.is_some());
        assert!(!s.unsigned_tasks && !s.unsigned_results);
    }

    #[test]
    fn half_configured_security_is_an_error() {
        let only_keys = Settings {
            task_serializer: SerializerName::Json,
            result_serializer: SerializerName::Json,
            accept_content: vec!["json".into()],
            ..signed_settings()
        };
        let err = Signing::from_settings(&only_keys).unwrap_err().to_string();
        assert!(err.contains("nothing is signed"), "{err}");
        let no_store = Settings {
            security_cert_store: None,
            ..signed_settings()
        };
        let err = Signing::from_settings(&no_store).unwrap_err().to_string();
        assert!(err.contains("CELERY_SECURITY_CERT_STORE"), "{err}");
        let no_key = Settings {
            security_key: None,
            ..signed_settings()
        };
        let err = Signing::from_settings(&no_key).unwrap_err().to_string();
        assert!(err.contains("CELERY_SECURITY_KEY"), "{err}");
        let wrong_password = Settings {
            security_key: Some(keys().join("key-encrypted.pem")),
            security_key_password: Some(crate::config::Password::new("nope".into())),
            ..signed_settings()
        };
        let err = format!("{:#}", Signing::from_settings(&wrong_password).unwrap_err());
        assert!(
            err.contains("wrong password") && !err.contains("nope"),
            "{err}"
        );
    }
}
