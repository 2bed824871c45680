//! Creating records with their associations (v4 association types), and
//! deals with their contact and company.

use std::collections::BTreeMap;

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{
    HubSpotClient,
    error::HubSpotError,
    limiter::RequestKind,
    objects::{
        BATCH_LIMIT, BatchOutcome, BatchResponse, HubSpotRecord, InputError, InputOutcome,
        ObjectType,
    },
};
use crate::error::{FieldError, ValidationErrors};

/// A record to create, with the records it is associated with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateInput {
    /// Its properties.
    pub properties: BTreeMap<String, String>,
    /// Its associations: HubSpot's id of the other record and the type.
    pub associations: Vec<(String, AssociationType)>,
}

/// A deal to create, associated with its contact and (optionally) its company.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DealCreate {
    /// The deal's properties (`dealname`, `amount`, `pipeline`, `dealstage`, …).
    pub properties: BTreeMap<String, String>,
    /// HubSpot's id of the deal's contact.
    pub contact_id: String,
    /// HubSpot's id of the deal's company, if any.
    pub company_id: Option<String>,
}

/// A v4 association type: its category and id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssociationType {
    /// `HUBSPOT_DEFINED` (true) or user defined.
    pub hubspot_defined: bool,
    /// The association type id.
    pub type_id: u32,
}

/// The association types a deal is created with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AssociationTypeIds {
    /// Deal → contact.
    pub deal_to_contact: AssociationType,
    /// Deal → company.
    pub deal_to_company: AssociationType,
}

#[derive(Debug, Deserialize)]
struct Label {
    category: String,
    #[serde(rename = "typeId")]
    type_id: u32,
    #[serde(default)]
    label: Option<String>,
}

impl HubSpotClient {
    /// The association types deals are created with: from the
    /// configuration when set there, otherwise asked once from
    /// `GET /crm/v4/associations/deals/{contacts,companies}/labels` (the
    /// HubSpot-defined type without a label) and kept.
    pub async fn association_type_ids(&self) -> Result<AssociationTypeIds, HubSpotError> {
        self.inner
            .association_ids
            .get_or_try_init(|| async {
                let config = &self.inner.config;
                let contact = match config.deal_to_contact_type_id {
                    Some(id) => AssociationType {
                        hubspot_defined: true,
                        type_id: id,
                    },
                    None => self.default_association("deals", "contacts").await?,
                };
                let company = match config.deal_to_company_type_id {
                    Some(id) => AssociationType {
                        hubspot_defined: true,
                        type_id: id,
                    },
                    None => self.default_association("deals", "companies").await?,
                };
                Ok(AssociationTypeIds {
                    deal_to_contact: contact,
                    deal_to_company: company,
                })
            })
            .await
            .copied()
    }

    async fn default_association(
        &self,
        from: &str,
        to: &str,
    ) -> Result<AssociationType, HubSpotError> {
        let path = format!("/crm/v4/associations/{from}/{to}/labels");
        let answer = self
            .send::<(), BatchResponse<Label>>(Method::GET, &path, None, RequestKind::Standard)
            .await?;
        let labels = answer.body.results;
        let defined = |l: &&Label| l.category == "HUBSPOT_DEFINED";
        labels
            .iter()
            .filter(defined)
            .find(|l| l.label.as_deref().is_none_or(str::is_empty))
            .or_else(|| labels.iter().find(defined))
            .map(|l| AssociationType {
                hubspot_defined: true,
                type_id: l.type_id,
            })
            .ok_or_else(|| {
                HubSpotError::Decode(format!(
                    "{path}: no HubSpot-defined association type in the answer"
                ))
            })
    }

    /// Creates records of `object_type` with their associations
    /// (`POST /crm/v3/objects/{type}/batch/create` with inline
    /// `associations`), 100 per call, in order. Refusals are matched to
    /// inputs by the `objectWriteTraceId` (the input's index) sent with
    /// each; results to the other inputs in order. A call that fails after
    /// its retries stops the batch: see [`BatchOutcome::stopped_by`].
    pub async fn batch_create(
        &self,
        object_type: &ObjectType,
        inputs: &[CreateInput],
    ) -> Result<BatchOutcome, HubSpotError> {
        let path = format!("/crm/v3/objects/{}/batch/create", object_type.as_str());
        let mut outcomes = vec![InputOutcome::NotSent; inputs.len()];
        for (chunk_no, chunk) in inputs.chunks(BATCH_LIMIT).enumerate() {
            let base = chunk_no * BATCH_LIMIT;
            let body = json!({
                "inputs": chunk.iter().enumerate().map(|(j, input)| json!({
                    "properties": input.properties,
                    "associations": input.associations.iter().map(|(to, t)| json!({
                        "to": {"id": to},
                        "types": [{
                            "associationCategory":
                                if t.hubspot_defined { "HUBSPOT_DEFINED" } else { "USER_DEFINED" },
                            "associationTypeId": t.type_id,
                        }],
                    })).collect::<Vec<_>>(),
                    "objectWriteTraceId": (base + j).to_string(),
                })).collect::<Vec<_>>()
            });
            let answer = match self
                .send::<_, BatchResponse<HubSpotRecord>>(
                    Method::POST,
                    &path,
                    Some(&body),
                    RequestKind::Standard,
                )
                .await
            {
                Ok(a) => a,
                Err(e) => {
                    return Ok(BatchOutcome {
                        outcomes,
                        stopped_by: Some(e),
                    });
                }
            };
            for e in answer.body.errors {
                for i in e.trace_indexes(base..base + chunk.len()) {
                    outcomes[i] = InputOutcome::Rejected(e.clone());
                }
            }
            let mut results = answer.body.results.into_iter();
            for slot in &mut outcomes[base..base + chunk.len()] {
                if matches!(slot, InputOutcome::NotSent) {
                    *slot = match results.next() {
                        Some(record) => InputOutcome::Written {
                            record,
                            created: Some(true),
                        },
                        None => InputOutcome::Unconfirmed,
                    };
                }
            }
        }
        Ok(BatchOutcome {
            outcomes,
            stopped_by: None,
        })
    }

    /// Associates records of `from` with records of `to` by the default
    /// (unlabeled, HubSpot-defined) association type
    /// (`POST /crm/v4/associations/{from}/{to}/batch/associate/default`),
    /// 100 pairs of HubSpot ids per call. Associating a pair twice changes
    /// nothing, so a batch can be sent again. Returns HubSpot's refusals
    /// (a record that does not exist, …); a call that fails after its
    /// retries is the error.
    pub async fn associate_default(
        &self,
        from: &ObjectType,
        to: &ObjectType,
        pairs: &[(String, String)],
    ) -> Result<Vec<InputError>, HubSpotError> {
        let path = format!(
            "/crm/v4/associations/{}/{}/batch/associate/default",
            from.as_str(),
            to.as_str()
        );
        let mut refused = Vec::new();
        for chunk in pairs.chunks(BATCH_LIMIT) {
            let body = json!({
                "inputs": chunk.iter().map(|(a, b)| json!({
                    "from": {"id": a},
                    "to": {"id": b},
                })).collect::<Vec<_>>()
            });
            let answer = self
                .send::<_, BatchResponse<serde_json::Value>>(
                    Method::POST,
                    &path,
                    Some(&body),
                    RequestKind::Standard,
                )
                .await?;
            refused.extend(answer.body.errors);
        }
        Ok(refused)
    }

    /// Removes every association between each pair of records of `from`
    /// and `to` (`POST /crm/v4/associations/{from}/{to}/batch/archive`),
    /// 100 pairs of HubSpot ids per call; a pair not associated is no
    /// error. A call that fails after its retries is the error.
    pub async fn disassociate(
        &self,
        from: &ObjectType,
        to: &ObjectType,
        pairs: &[(String, String)],
    ) -> Result<(), HubSpotError> {
        let path = format!(
            "/crm/v4/associations/{}/{}/batch/archive",
            from.as_str(),
            to.as_str()
        );
        for chunk in pairs.chunks(BATCH_LIMIT) {
            let body = json!({
                "inputs": chunk.iter().map(|(a, b)| json!({
                    "from": {"id": a},
                    "to": [{"id": b}],
                })).collect::<Vec<_>>()
            });
            self.send::<_, serde_json::Value>(
                Method::POST,
                &path,
                Some(&body),
                RequestKind::Standard,
            )
            .await?;
        }
        Ok(())
    }

    /// Creates deals, each associated with its contact and (when given) its
    /// company, with the association types of
    /// [`association_type_ids`](Self::association_type_ids): a
    /// [`batch_create`](Self::batch_create) of deals.
    pub async fn create_deals(&self, deals: &[DealCreate]) -> Result<BatchOutcome, HubSpotError> {
        let mut errors = ValidationErrors::new();
        for (i, d) in deals.iter().enumerate() {
            if d.contact_id.trim().is_empty() {
                errors.push(FieldError::new(
                    format!("deals[{i}].contact_id"),
                    "required",
                    "is empty",
                ));
            }
        }
        if !errors.is_empty() {
            return Err(HubSpotError::InvalidRequest(errors));
        }
        if deals.is_empty() {
            return Ok(BatchOutcome {
                outcomes: Vec::new(),
                stopped_by: None,
            });
        }
        let types = self.association_type_ids().await?;
        let inputs: Vec<CreateInput> = deals
            .iter()
            .map(|d| {
                let mut associations = vec![(d.contact_id.clone(), types.deal_to_contact)];
                if let Some(c) = &d.company_id {
                    associations.push((c.clone(), types.deal_to_company));
                }
                CreateInput {
                    properties: d.properties.clone(),
                    associations,
                }
            })
            .collect();
        self.batch_create(&ObjectType::Deals, &inputs).await
    }
}
