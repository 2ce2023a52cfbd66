//! `AlertService`: alerts as the store has them (raised and resolved by the leader's
//! evaluator), listed and acknowledged from any coordinator.

use cronfleet_core::alert::{AlertKind, AlertState};
use cronfleet_proto::v1 as pb;
use cronfleet_proto::v1::alert_service_server::AlertService;
use cronfleet_proto::{timestamp, timestamp_opt};
use cronfleet_store::{Alert, AlertCount, AlertFilter, DeliveryStatus, MAX_ALERT_PAGE};
use tonic::{Request, Response, Status};

use super::{AdminError, AdminServices, Call, grpc};

impl AdminServices {
    pub async fn list_alerts(
        &self,
        request: pb::ListAlertsRequest,
    ) -> Result<pb::ListAlertsResponse, AdminError> {
        Call::plain("ListAlerts")
            .answer(async {
                let filter = alert_filter(&request)?;
                let alerts = self.state.alerts.list_alerts(&filter).await?;
                Ok(pb::ListAlertsResponse {
                    alerts: alerts.iter().map(alert_to_proto).collect(),
                })
            })
            .await
    }

    pub async fn ack_alert(&self, request: pb::AckAlertRequest) -> Result<pb::Alert, AdminError> {
        Call::plain("AckAlert")
            .answer(async {
                let by = match request.by.trim() {
                    "" => "an operator",
                    by => by,
                };
                if by.chars().count() > MAX_ACKED_BY {
                    return Err(AdminError::field(
                        "by",
                        format!(
                            "a name of {} characters is too long; at most {MAX_ACKED_BY}",
                            by.chars().count()
                        ),
                    ));
                }
                let alert = self
                    .state
                    .alerts
                    .ack_alert(request.id, by, self.now())
                    .await?;
                Ok(alert_to_proto(&alert))
            })
            .await
    }

    /// The firing alerts per kind (the console's banner).
    pub async fn count_alerts(&self) -> Result<Vec<AlertCount>, AdminError> {
        Call::plain("CountAlerts")
            .answer(async { Ok(self.state.alerts.count_alerts().await?) })
            .await
    }
}

/// The longest name an acknowledgement records.
const MAX_ACKED_BY: usize = 200;

fn alert_filter(request: &pb::ListAlertsRequest) -> Result<AlertFilter, AdminError> {
    let state = match request.state.as_str() {
        "" => None,
        state => Some(
            state
                .parse::<AlertState>()
                .map_err(|e| AdminError::field("state", e))?,
        ),
    };
    let kind = match request.kind.as_str() {
        "" => None,
        kind => Some(
            kind.parse::<AlertKind>()
                .map_err(|e| AdminError::field("kind", e))?,
        ),
    };
    if request.before < 0 {
        return Err(AdminError::field(
            "before",
            format!(
                "before {} is not an alert id; expected a positive id (the last one of the previous page) or 0 for the newest",
                request.before
            ),
        ));
    }
    if request.limit > MAX_ALERT_PAGE {
        return Err(AdminError::field(
            "limit",
            format!(
                "limit {} is too large; at most {MAX_ALERT_PAGE} alerts are listed at once (page with before)",
                request.limit
            ),
        ));
    }
    Ok(AlertFilter {
        state,
        kind,
        job: (!request.job.is_empty()).then(|| request.job.clone()),
        before: (request.before > 0).then_some(request.before),
        limit: if request.limit == 0 {
            100
        } else {
            request.limit
        },
    })
}

pub fn alert_to_proto(alert: &Alert) -> pb::Alert {
    pb::Alert {
        id: alert.id,
        kind: alert.kind.as_str().to_owned(),
        state: alert.state.as_str().to_owned(),
        subject: alert.subject.clone(),
        job: alert.job_name.clone().unwrap_or_default(),
        run_id: alert.run_id,
        message: alert.message.clone(),
        fired_at: Some(timestamp(alert.fired_at)),
        resolved_at: timestamp_opt(alert.resolved_at),
        acked_at: timestamp_opt(alert.acked_at),
        acked_by: alert.acked_by.clone().unwrap_or_default(),
        labels: alert.labels.clone().into_iter().collect(),
        deliveries: alert.deliveries.iter().map(delivery_to_proto).collect(),
    }
}

fn delivery_to_proto(delivery: &DeliveryStatus) -> pb::AlertDelivery {
    pb::AlertDelivery {
        channel: delivery.channel.clone(),
        event: delivery.event.as_str().to_owned(),
        attempts: delivery.attempts,
        delivered_at: timestamp_opt(delivery.delivered_at),
        abandoned_at: timestamp_opt(delivery.abandoned_at),
        next_attempt_at: Some(timestamp(delivery.next_attempt_at)),
        last_error: delivery.last_error.clone().unwrap_or_default(),
    }
}

/// The gRPC service: each call is the inherent method of the same name.
#[tonic::async_trait]
impl AlertService for AdminServices {
    async fn list_alerts(
        &self,
        request: Request<pb::ListAlertsRequest>,
    ) -> Result<Response<pb::ListAlertsResponse>, Status> {
        grpc(AdminServices::list_alerts(self, request.into_inner()).await)
    }

    async fn ack_alert(
        &self,
        request: Request<pb::AckAlertRequest>,
    ) -> Result<Response<pb::Alert>, Status> {
        grpc(AdminServices::ack_alert(self, request.into_inner()).await)
    }
}
