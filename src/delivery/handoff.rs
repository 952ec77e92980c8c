//! One hand-off: prepare (nothing committed), claim, the driver call (the
//! point of no return), settle. See the steps in the module docs of
//! `delivery`.

use std::sync::atomic::Ordering;

use super::schedule::draw_gap;
use super::settle::{settle, Settlement};
use super::{Backoff, Engine, InFlight, Interrupted};
use crate::domain::error_codes::{INVALID_MEDIA_URL, SEND_FAILED};
use crate::domain::{AccountStatus, AttemptStatus, Message};
use crate::driver::{
    MediaDelivery, MediaPayload, OutgoingContent, OutgoingMessage, WhatsAppDriver,
};
use crate::media::MediaKind;
use crate::store::admin::{self, Account};
use crate::store::attempts::{self, AttemptKey, AttemptRow, TransitionFields};
use crate::store::{leases, StoreError};

impl Engine {
    /// Prepare, claim, hand to the driver, settle (see the module docs).
    pub(super) async fn hand_off(
        &self,
        account: Account,
        attempt: AttemptRow,
    ) -> Result<(), Interrupted> {
        let redelivery = attempt.status == AttemptStatus::Sending && !attempt.handoff_unsent;
        // Held until the settlement is written: the lease is not given up
        // mid-way, and every write below carries its fence.
        let hold = self.hold(&account.id)?;
        let fence = hold.fence();
        let Some(driver) = self.inner.drivers.get(account.driver_kind()) else {
            let message = format!(
                "the {} driver is not available in this build",
                account.driver
            );
            return self
                .record(
                    &account,
                    &attempt.id,
                    None,
                    fence,
                    fail(SEND_FAILED, message),
                )
                .await;
        };

        // 1. Prepare. Nothing is committed yet, so a stop simply abandons it.
        let prepared = tokio::select! {
            prepared = self.prepare(driver.as_ref(), &account, &attempt) => prepared,
            _ = self.stopping() => return Err(Interrupted::Shutdown),
        };
        let content = match prepared {
            Ok(content) => content,
            Err(settlement) => {
                return self
                    .record(&account, &attempt.id, None, fence, settlement)
                    .await
            }
        };

        // 2. Claim. Counted in flight before the last shutdown check, so
        // `drain` either waits for this hand-off or it never starts.
        let _in_flight = InFlight::enter(&self.inner);
        if self.shutting_down() {
            return Err(Interrupted::Shutdown);
        }
        // The preparation (a media fetch) may have outlasted the lease.
        if !hold.still_valid() {
            return Err(Interrupted::LeaseLost);
        }
        let gap = draw_gap(
            &mut rand::thread_rng(),
            self.inner.pacing.min_delay,
            self.inner.pacing.max_delay,
        );
        let now = self.inner.clock.now_ms();
        let (attempt_id, account_id, fresh_id) = (
            attempt.id.clone(),
            account.id.clone(),
            driver.new_message_id(),
        );
        let gap_ms = gap.as_millis() as i64;
        let next_slot = now + gap_ms;
        self.inner.stats.claims.fetch_add(1, Ordering::Relaxed);
        let claimed = self
            .inner
            .store
            .write(move |c| {
                attempts::claim(
                    c,
                    &attempt_id,
                    &account_id,
                    &fresh_id,
                    next_slot,
                    fence,
                    now,
                )
            })
            .await
            .map_err(Interrupted::from)?;
        let Some(attempt) = claimed else {
            return Ok(());
        };
        // The last look before the point of no return: a node that paused
        // past its lease stops here. The attempt certainly did not go, so
        // it is marked so, if the fence still allows the write; otherwise
        // the new holder finds it `sending` and hands it off again with the
        // same message id (as after a crash at this point).
        if !hold.still_valid() {
            let (attempt_id, account_id) = (attempt.id.clone(), account.id.clone());
            let _ = self
                .inner
                .store
                .write(move |c| {
                    leases::guard(c, &account_id, fence)?;
                    attempts::mark_handoff_unsent(c, &attempt_id)
                })
                .await;
            return Err(Interrupted::LeaseLost);
        }

        // 3. The driver call: the point of no return.
        let outgoing = OutgoingMessage {
            message_id: attempt.message_id.clone().unwrap_or_default(),
            to: attempt.to_phone.clone(),
            content,
            redelivery,
            lease: hold.lease.clone(),
        };
        let result = driver.send(&account, &outgoing).await;

        // 4. Settle. The gap counts again from the driver's answer, so two
        // hand-offs are `gap` apart as the network sees them, however long
        // the claim took to commit.
        let settlement = settle(attempt.tries, result, self.inner.clock.now_ms());
        self.record(&account, &attempt.id, Some(gap_ms), fence, settlement)
            .await
    }

    /// The message as the driver will send it: the stored payload, media
    /// fetched (pinned) if the driver wants bytes, then the driver's own
    /// preparation. A failure here is final or "retry later"; nothing sent.
    async fn prepare(
        &self,
        driver: &dyn WhatsAppDriver,
        account: &Account,
        attempt: &AttemptRow,
    ) -> Result<OutgoingContent, Settlement> {
        let content = self
            .content_for(attempt, driver.media_delivery(account))
            .await
            .map_err(|(code, message)| fail(code, message))?;
        driver
            .prepare(account, &attempt.id, content)
            .await
            .map_err(|e| settle(attempt.tries + 1, Err(e), self.inner.clock.now_ms()))
    }

    /// Commit a settlement, retrying while the store cannot write: the
    /// driver's answer is known only here, so it is not dropped. At shutdown
    /// it is given up; the attempt is then `sending` and handed off again
    /// (with the same message id) after the restart. `claimed_gap` is the
    /// gap drawn at the claim if this hand-off was claimed (reached the
    /// driver call); `fence` is its lease's, checked in the write (a lease
    /// that moved on: nothing is written, the new holder hands the attempt
    /// off again).
    async fn record(
        &self,
        account: &Account,
        attempt_id: &str,
        claimed_gap: Option<i64>,
        fence: Option<i64>,
        settlement: Settlement,
    ) -> Result<(), Interrupted> {
        let mut backoff = Backoff::new();
        loop {
            let (account_id, id, settlement) = (
                account.id.clone(),
                attempt_id.to_string(),
                settlement.clone(),
            );
            let now = self.inner.clock.now_ms();
            let written = self
                .inner
                .store
                .write(move |c| {
                    leases::guard(c, &account_id, fence)?;
                    apply_settlement(c, &account_id, &id, claimed_gap, &settlement, now)
                })
                .await;
            match written {
                Ok(finished) => {
                    if let Some((status, code)) = finished {
                        crate::metrics::attempts_finished(&account.id, status, code, 1);
                    }
                    break;
                }
                Err(e) if e.is_unavailable() && !self.shutting_down() => {
                    self.store_error("could not record a send result", &account.id, &e);
                    self.pause(backoff.next()).await;
                }
                Err(StoreError::Fenced(reason)) => {
                    tracing::warn!(account = %account.id, attempt = %attempt_id, %reason, "send result not recorded: the lease moved on");
                    return Err(Interrupted::LeaseLost);
                }
                Err(e) => {
                    tracing::error!(account = %account.id, attempt = %attempt_id, error = %e, "could not record a send result");
                    return Err(Interrupted::Store(e));
                }
            }
        }
        match &settlement {
            Settlement::Offline { reason } => {
                tracing::warn!(account = %account.id, %reason, "account went offline during a send");
            }
            Settlement::RetryAt { reason, .. } => {
                tracing::info!(attempt = %attempt_id, %reason, "send will be retried");
            }
            _ => {}
        }
        Ok(())
    }

    /// The message as the driver gets it; media fetched (pinned) if the
    /// driver wants bytes.
    async fn content_for(
        &self,
        attempt: &AttemptRow,
        delivery: MediaDelivery,
    ) -> Result<OutgoingContent, (&'static str, String)> {
        let payload: serde_json::Value = serde_json::from_str(&attempt.payload).unwrap_or_default();
        let message = Message::from_payload(&attempt.type_name, &payload).ok_or((
            SEND_FAILED,
            "stored message payload is unreadable".to_string(),
        ))?;
        let media = |url: String, kind: MediaKind, mimetype: Option<String>| async move {
            match delivery {
                MediaDelivery::Link => Ok(MediaPayload::Link { url, mimetype }),
                MediaDelivery::Bytes => {
                    let fetched = self
                        .inner
                        .media
                        .fetch(&url, kind, mimetype.as_deref())
                        .await
                        .map_err(|e| (INVALID_MEDIA_URL, e.to_string()))?;
                    Ok(MediaPayload::Bytes {
                        bytes: fetched.bytes,
                        mimetype: fetched.mimetype,
                    })
                }
            }
        };
        Ok(match message {
            Message::Text { body } => OutgoingContent::Text { body },
            Message::Image { url, caption } => OutgoingContent::Image {
                media: media(url, MediaKind::Image, None).await?,
                caption,
            },
            Message::Document {
                url,
                file_name,
                mimetype,
                caption,
            } => OutgoingContent::Document {
                media: media(url, MediaKind::Document, mimetype).await?,
                file_name,
                caption,
            },
        })
    }
}

fn fail(code: &'static str, message: impl Into<String>) -> Settlement {
    Settlement::Failed {
        code,
        message: message.into(),
    }
}

/// Carry out a settlement in one write. Only a claimed hand-off that did not
/// send clears the "may have been sent" mark: a settlement reached before the
/// claim says nothing about an earlier, interrupted hand-off. A claimed one
/// also moves the account's next slot to at least `now` plus its gap.
fn apply_settlement(
    c: &crate::store::Conn,
    account_id: &str,
    attempt_id: &str,
    claimed_gap: Option<i64>,
    settlement: &Settlement,
    now: i64,
) -> Result<Option<(AttemptStatus, Option<&'static str>)>, StoreError> {
    let claimed = claimed_gap.is_some();
    if let Some(gap) = claimed_gap {
        attempts::defer_next_send_at(c, account_id, now + gap)?;
    }
    match settlement {
        Settlement::Accepted {
            message_id,
            remote_jid,
        } => {
            let fields = TransitionFields {
                remote_jid: Some(remote_jid),
                message_id: Some(message_id),
                ..Default::default()
            };
            let moved = attempts::transition(
                c,
                AttemptKey::Id(attempt_id),
                AttemptStatus::Accepted,
                &fields,
                now,
            )?;
            return Ok(moved.then_some((AttemptStatus::Accepted, None)));
        }
        Settlement::Failed { code, message } => {
            let fields = TransitionFields {
                error_code: Some(code),
                error_message: Some(message),
                ..Default::default()
            };
            let moved = attempts::transition(
                c,
                AttemptKey::Id(attempt_id),
                AttemptStatus::Failed,
                &fields,
                now,
            )?;
            return Ok(moved.then_some((AttemptStatus::Failed, Some(*code))));
        }
        Settlement::Offline { reason } => {
            // Keep the send queued (same message id) until the account
            // reconnects or the offline grace runs out.
            if claimed {
                attempts::mark_handoff_unsent(c, attempt_id)?;
            }
            admin::set_account_status_at(
                c,
                account_id,
                AccountStatus::Disconnected,
                Some(reason),
                now,
            )?;
        }
        Settlement::RetryAt { at, .. } => {
            if claimed {
                attempts::mark_handoff_unsent(c, attempt_id)?;
            }
            attempts::set_next_send_at(c, account_id, *at)?;
        }
    }
    Ok(None)
}
