//! Contact search as one SQL statement built with sea-query: the filters of
//! a [`ContactQuery`], its order, and the keyset condition of its cursor.
//! Also the [`Binder`] and tag filter of the company and deal searches,
//! whose statements are written as text.

use chrono::DateTime;
use sea_query::{
    Alias, Expr, ExprTrait, Order, PostgresQueryBuilder, Query, SelectStatement, Value,
};
use sea_query_postgres::{PostgresBinder, PostgresValues};
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::schema::{CONTACT_COLUMNS, Contacts, contacts_ranked, contacts_scored};
use crate::{
    domain::{TagId, TenantId, caseless_key},
    error::{Error, FieldError, Result, ValidationErrors},
    store::{ContactQuery, ContactSort, ContactSortKey, TagFilter},
};

/// The LIKE pattern matching the caseless keys that start with `prefix`'s
/// ([`caseless_key`]): `%`, `_` and `\` escaped so that they match
/// literally (the pattern's escape character is `\`), then `%`.
pub(super) fn like_prefix(prefix: &str) -> String {
    let key = caseless_key(prefix);
    let mut p = String::with_capacity(key.len() + 1);
    for ch in key.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(ch);
    }
    p.push('%');
    p
}

/// The name sort's key columns: the stored caseless keys (`COLLATE "C"`,
/// so compared in code-point order like the in-memory store compares them).
const NAME_KEY: &str = "last_name_key, first_name_key, id";

/// The SQL and parameters of `query` for `tenant`, fetching `limit + 1`
/// rows (the extra one says whether another page follows). Each row holds
/// the columns of `contact_select!()`; under a name sort, then the stored
/// `last_name_key` and `first_name_key` the next cursor is made of.
pub(super) fn build(
    tenant: TenantId,
    q: &ContactQuery,
    limit: usize,
    after: Option<&ContactSortKey>,
) -> Result<(String, PostgresValues)> {
    let mut s = Query::select();
    s.columns(CONTACT_COLUMNS);
    if matches!(q.sort, ContactSort::NameAsc | ContactSort::NameDesc) {
        s.columns([Contacts::LastNameKey, Contacts::FirstNameKey]);
    }
    s.from(Contacts::Table)
        .and_where(Expr::col(Contacts::TenantId).eq(tenant.as_uuid()));
    // Under the score sort the rows come from the rank rows' index, the
    // contacts joined to them (`contacts_ranked!`); otherwise the score is
    // read for the rows returned (`contacts_scored!`).
    let by_rank = matches!(q.sort, ContactSort::ScoreAsc | ContactSort::ScoreDesc);
    filters(&mut s, q, by_rank);
    tag_filter(&mut s, tenant, &q.tags);
    let desc = q.sort.is_descending();
    if let Some(key) = after {
        s.and_where(keyset(q.sort, key, desc)?);
    }
    let order = if desc { Order::Desc } else { Order::Asc };
    match q.sort {
        ContactSort::ScoreAsc | ContactSort::ScoreDesc => {
            s.order_by(Contacts::Score, order.clone());
        }
        ContactSort::CreatedAsc | ContactSort::CreatedDesc => {
            s.order_by(Contacts::CreatedAt, order.clone());
        }
        ContactSort::UpdatedAsc | ContactSort::UpdatedDesc => {
            s.order_by(Contacts::UpdatedAt, order.clone());
        }
        ContactSort::NameAsc | ContactSort::NameDesc => {
            s.order_by(Contacts::LastNameKey, order.clone())
                .order_by(Contacts::FirstNameKey, order.clone());
        }
    }
    // The id a sort ends with: the rank row's under the score sort (see
    // `contacts_ranked!`), the contact's otherwise.
    if by_rank {
        s.order_by(Alias::new(RANK_ID), order);
    } else {
        s.order_by(Contacts::Id, order);
    }
    // A search with no filter, in the order of one index that holds every
    // contact it may return, reads that index: its plan cannot depend on
    // a value.
    let literal = literal_limit(limit).filter(|_| unfiltered(q) && index_ordered(q));
    if literal.is_none() {
        s.limit(limit as u64 + 1);
    }
    let (mut sql, values) = s.build_postgres(PostgresQueryBuilder);
    if let Some(fetch) = literal {
        sql.push_str(&format!(" LIMIT {fetch}"));
    }
    Ok((reading_scores(sql, by_rank), values))
}

/// The page sizes whose searches name the number of rows they fetch as a
/// literal (`LIMIT 51`) instead of a parameter ([`literal_limit`]).
const LITERAL_PAGE_SIZES: [usize; 9] = [10, 20, 25, 50, 100, 200, 250, 500, 1000];

/// The number of rows a page of `limit` contacts fetches (`limit + 1`: the
/// extra row says whether another page follows), when the statement
/// should name it as a literal: when `limit` is one of a few common page
/// sizes ([`LITERAL_PAGE_SIZES`]).
///
/// Why: PostgreSQL costs the generic plan of a prepared statement whose
/// `LIMIT` is a parameter as if it fetched a tenth of the rows it may
/// read, so the plan made for the parameters of each execution always
/// looks cheaper, and the statement is planned again at every execution
/// (on a tenant of a million contacts, planning the top-leads read takes
/// 0.13–0.2 ms, as long as running it). With the limit written in, the
/// connection keeps one generic plan after five executions and binds it
/// directly. Only for searches whose plan cannot depend on a parameter's
/// value ([`unfiltered`] and [`index_ordered`]): a generic plan elsewhere
/// could suit the average tenant and not a large one. Other sizes keep
/// the parameter: a few sizes bound the number of statements each
/// connection prepares.
fn literal_limit(limit: usize) -> Option<usize> {
    LITERAL_PAGE_SIZES.contains(&limit).then_some(limit + 1)
}

/// True when one index gives `q`'s order and holds every contact it
/// selects by their state: the rank rows' top-leads index (active
/// contacts only) for the score sorts of active contacts, the creation
/// and name indexes for all contacts or the active ones (most are). Not
/// the updates sort (no index: the tenant is read and sorted), nor the
/// score sorts of all or inactive contacts, nor the inactive ones under
/// another sort (a few rows of a large tenant, whose best plan depends on
/// how few).
fn index_ordered(q: &ContactQuery) -> bool {
    match q.sort {
        ContactSort::ScoreAsc | ContactSort::ScoreDesc => q.active == Some(true),
        ContactSort::CreatedAsc
        | ContactSort::CreatedDesc
        | ContactSort::NameAsc
        | ContactSort::NameDesc => q.active != Some(false),
        ContactSort::UpdatedAsc | ContactSort::UpdatedDesc => false,
    }
}

/// True when `q` filters on nothing but whether contacts are active, so
/// that its statement may name its limit as a literal (see
/// [`literal_limit`]) when [`index_ordered`]. Every field is named: a new
/// filter must say here whether it keeps the plan fixed.
fn unfiltered(q: &ContactQuery) -> bool {
    let ContactQuery {
        email_prefix,
        name_prefix,
        company_prefix,
        lead_sources,
        min_score,
        max_score,
        active: _,
        created_from,
        created_until,
        updated_from,
        updated_until,
        metadata_contains,
        owner,
        company_id,
        tags,
        sort: _,
        page: _,
    } = q;
    email_prefix.is_none()
        && name_prefix.is_none()
        && company_prefix.is_none()
        && lead_sources.is_empty()
        && min_score.is_none()
        && max_score.is_none()
        && created_from.is_none()
        && created_until.is_none()
        && updated_from.is_none()
        && updated_until.is_none()
        && metadata_contains.is_none()
        && owner.is_none()
        && company_id.is_none()
        && tags.is_empty()
}

/// The rank row's contact id in [`contacts_ranked!`].
const RANK_ID: &str = "rank_id";

/// `sql` reading `contacts` with their scores: as [`contacts_ranked!`], the
/// contacts joined to their rank rows, when `by_rank`, else as
/// [`contacts_scored!`]. The statement was built reading `"contacts"`,
/// which it names once, in its `FROM`.
fn reading_scores(sql: String, by_rank: bool) -> String {
    const TABLE: &str = r#"FROM "contacts""#;
    debug_assert_eq!(sql.matches(TABLE).count(), 1, "{sql}");
    let table = if by_rank {
        concat!("FROM ", contacts_ranked!())
    } else {
        concat!("FROM ", contacts_scored!())
    };
    sql.replacen(TABLE, table, 1)
}

fn filters(s: &mut SelectStatement, q: &ContactQuery, by_rank: bool) {
    if let Some(p) = &q.email_prefix {
        // An erased contact has no email key; its placeholder email, all
        // lower-case ASCII, is its own key.
        s.and_where(Expr::cust_with_values(
            "coalesce(email_key, email) LIKE $1",
            [like_prefix(p)],
        ));
    }
    if let Some(p) = &q.name_prefix {
        let pattern = like_prefix(p);
        s.and_where(Expr::cust_with_values(
            "(first_name_key LIKE $1 OR last_name_key LIKE $2)",
            [pattern.clone(), pattern],
        ));
    }
    if let Some(p) = &q.company_prefix {
        s.and_where(Expr::cust_with_values(
            "company_key LIKE $1",
            [like_prefix(p)],
        ));
    }
    if let Some(owner) = &q.owner {
        s.and_where(Expr::col(Contacts::OwnerId).eq(owner.as_str()));
    }
    if let Some(company) = q.company_id {
        s.and_where(Expr::col(Contacts::CompanyId).eq(company.as_uuid()));
    }
    if !q.lead_sources.is_empty() {
        let mut sources: Vec<&'static str> = q.lead_sources.iter().map(|l| l.as_str()).collect();
        sources.sort_unstable();
        sources.dedup();
        s.and_where(Expr::col(Contacts::LeadSource).is_in(sources));
    }
    if let Some(m) = q.min_score {
        s.and_where(Expr::col(Contacts::Score).gte(i16::from(m.get())));
    }
    if let Some(m) = q.max_score {
        s.and_where(Expr::col(Contacts::Score).lte(i16::from(m.get())));
    }
    // Inlined rather than bound, so that a generic plan can still use the
    // partial index of active contacts.
    match q.active {
        Some(true) if by_rank => {
            s.and_where(Expr::cust("active AND rank_active"));
        }
        Some(true) => {
            s.and_where(Expr::cust("active"));
        }
        Some(false) => {
            s.and_where(Expr::cust("NOT active"));
        }
        None => {}
    }
    if let Some(t) = q.created_from {
        s.and_where(Expr::col(Contacts::CreatedAt).gte(t));
    }
    if let Some(t) = q.created_until {
        s.and_where(Expr::col(Contacts::CreatedAt).lt(t));
    }
    if let Some(t) = q.updated_from {
        s.and_where(Expr::col(Contacts::UpdatedAt).gte(t));
    }
    if let Some(t) = q.updated_until {
        s.and_where(Expr::col(Contacts::UpdatedAt).lt(t));
    }
    if let Some(m) = &q.metadata_contains {
        let json = serde_json::Value::from(m.clone());
        s.and_where(Expr::cust_with_values("metadata @> $1", [json]));
    }
}

/// The tag filter of a search ([`ContactQuery::tags`]): a subquery on the
/// contact's taggings per side that names tags, each tag id bound (each
/// side sorted and without repeats, at most
/// [`MAX_FILTER_TAGS`](crate::store::MAX_FILTER_TAGS) of them, as
/// [`ContactQuery::checked`] saw to). The subqueries name the tenant
/// themselves, rather than through the outer row, so that a distributed
/// PostgreSQL (Citus) routes the whole query to the tenant's shard.
fn tag_filter(s: &mut SelectStatement, tenant: TenantId, tags: &TagFilter) {
    /// The taggings of the contact of the outer row among `n` tags: `$1`
    /// is the tenant, `$2`… the tags.
    fn taggings_among(n: usize) -> String {
        let list: Vec<String> = (2..=n + 1).map(|i| format!("${i}")).collect();
        format!(
            "FROM taggings g WHERE g.tenant_id = $1 AND g.contact_id = contacts.id \
             AND g.tag_id IN ({})",
            list.join(", ")
        )
    }
    let values = |ids: &[TagId]| -> Vec<Value> {
        std::iter::once(Value::from(tenant.as_uuid()))
            .chain(ids.iter().map(|t| Value::from(t.as_uuid())))
            .collect()
    };
    let [any_of, all_of, none_of] = tags.scope_key();
    if !any_of.is_empty() {
        s.and_where(Expr::cust_with_values(
            format!("EXISTS (SELECT 1 {})", taggings_among(any_of.len())),
            values(&any_of),
        ));
    }
    if !all_of.is_empty() {
        // A contact carries a tag once: it carries them all when it
        // carries as many of them as there are.
        let mut v = values(&all_of);
        v.push(Value::from(all_of.len() as i64));
        s.and_where(Expr::cust_with_values(
            format!(
                "(SELECT count(*) {}) = ${}",
                taggings_among(all_of.len()),
                all_of.len() + 2
            ),
            v,
        ));
    }
    if !none_of.is_empty() {
        s.and_where(Expr::cust_with_values(
            format!("NOT EXISTS (SELECT 1 {})", taggings_among(none_of.len())),
            values(&none_of),
        ));
    }
}

/// The condition "comes after `key`" in the sort's direction, as a
/// row-value comparison that an index on the sort columns can serve.
fn keyset(sort: ContactSort, key: &ContactSortKey, desc: bool) -> Result<Expr> {
    let op = if desc { "<" } else { ">" };
    let invalid = || {
        Error::from(ValidationErrors::single(FieldError::new(
            "cursor",
            "invalid_format",
            "is not a cursor of this list",
        )))
    };
    Ok(match (sort, key) {
        (ContactSort::ScoreAsc | ContactSort::ScoreDesc, ContactSortKey::Score(score, id)) => {
            let score = i16::try_from(*score).map_err(|_| invalid())?;
            Expr::cust_with_values(
                format!("(score, {RANK_ID}) {op} ($1, $2)"),
                [Value::from(score), Value::from(*id)],
            )
        }
        (
            ContactSort::CreatedAsc
            | ContactSort::CreatedDesc
            | ContactSort::UpdatedAsc
            | ContactSort::UpdatedDesc,
            ContactSortKey::Time(micros, id),
        ) => {
            let at = DateTime::from_timestamp_micros(*micros).ok_or_else(invalid)?;
            let col = if matches!(sort, ContactSort::CreatedAsc | ContactSort::CreatedDesc) {
                "created_at"
            } else {
                "updated_at"
            };
            Expr::cust_with_values(
                format!("({col}, id) {op} ($1, $2)"),
                [Value::from(at), Value::from(*id)],
            )
        }
        (ContactSort::NameAsc | ContactSort::NameDesc, ContactSortKey::Name(last, first, id)) => {
            Expr::cust_with_values(
                format!("({NAME_KEY}) {op} ($1, $2, $3)"),
                [
                    Value::from(last.clone()),
                    Value::from(first.clone()),
                    Value::from(*id),
                ],
            )
        }
        _ => return Err(invalid()),
    })
}

/// Binds the parameters of a statement built at run time, numbering them
/// (`$1`, `$2`, … in the order bound).
#[derive(Default)]
pub(super) struct Binder {
    values: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Binder {
    /// `$n` of `v`, the next parameter.
    pub(super) fn bind(&mut self, v: impl ToSql + Sync + Send + 'static) -> String {
        self.values.push(Box::new(v));
        format!("${}", self.values.len())
    }

    /// The bound values, for a query.
    pub(super) fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.values
            .iter()
            .map(|v| v.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

/// The conditions of a tag filter on the row `row` (for example `c.id`)
/// of the records whose taggings name it in `column` (`company_id`,
/// `deal_id`), ` AND …` each, `t` the tenant's parameter: subqueries held
/// to the tenant, so that a distributed PostgreSQL routes them to the
/// row's shard. Empty for an empty filter.
pub(super) fn tag_filter_sql(
    b: &mut Binder,
    t: &str,
    tags: &TagFilter,
    column: &str,
    row: &str,
) -> String {
    let [any_of, all_of, none_of] = tags.scope_key();
    let uuids = |v: Vec<TagId>| v.into_iter().map(|t| t.as_uuid()).collect::<Vec<Uuid>>();
    // The taggings of the row's record with one of the tags `$n`.
    let tagged = |tags: &str| {
        format!(
            "FROM taggings tg WHERE tg.tenant_id = {t} AND tg.{column} = {row} \
             AND tg.tag_id = ANY({tags})"
        )
    };
    let mut sql = String::new();
    if !any_of.is_empty() {
        let tags = b.bind(uuids(any_of));
        sql += &format!(" AND EXISTS (SELECT 1 {})", tagged(&tags));
    }
    if !all_of.is_empty() {
        // A tag is attached to a record at most once (a unique key).
        let count = all_of.len() as i64;
        let tags = b.bind(uuids(all_of));
        let count = b.bind(count);
        sql += &format!(" AND (SELECT count(*) {}) = {count}", tagged(&tags));
    }
    if !none_of.is_empty() {
        let tags = b.bind(uuids(none_of));
        sql += &format!(" AND NOT EXISTS (SELECT 1 {})", tagged(&tags));
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{OwnerId, Score};

    #[test]
    fn like_prefixes_escape_wildcards_and_match_case_insensitively() {
        assert_eq!(like_prefix("Ab"), "ab%");
        assert_eq!(like_prefix("Straße"), "strasse%");
        assert_eq!(like_prefix("50%_off\\"), "50\\%\\_off\\\\%");
    }

    #[test]
    fn a_search_filters_by_tenant_and_orders_by_the_sort_then_id() {
        let q = ContactQuery::top_leads(10);
        let (sql, values) = build(TenantId::new(), &q, 10, None).unwrap();
        assert!(
            sql.contains(r#"WHERE "tenant_id" = $1 AND (active AND rank_active)"#),
            "{sql}"
        );
        // A common page size is written in (see `literal_limit`).
        assert!(
            sql.ends_with(r#"ORDER BY "score" DESC, "rank_id" DESC LIMIT 11"#),
            "{sql}"
        );
        assert!(
            sql.contains("LEFT JOIN contact_ranks r") && sql.contains(") AS contacts WHERE"),
            "reads the contacts joined to their rank rows: {sql}"
        );
        assert_eq!(values.0.len(), 1);
        // Another size is a parameter.
        let (sql, values) = build(TenantId::new(), &q, 12, None).unwrap();
        assert!(
            sql.ends_with(r#"ORDER BY "score" DESC, "rank_id" DESC LIMIT $2"#),
            "{sql}"
        );
        assert_eq!(values.0.len(), 2);
        // Another order reads each returned row's score by a subquery.
        let q = ContactQuery::new()
            .with_active(true)
            .with_sort(ContactSort::CreatedAsc);
        let (sql, _) = build(TenantId::new(), &q, 10, None).unwrap();
        assert!(
            sql.contains(
                r#"WHERE "tenant_id" = $1 AND (active) ORDER BY "created_at" ASC, "id" ASC"#
            ),
            "{sql}"
        );
        assert!(
            sql.contains("(SELECT r.score FROM contact_ranks r") && !sql.contains("JOIN"),
            "{sql}"
        );
    }

    #[test]
    fn a_tag_filter_binds_the_tenant_and_each_tag_once_per_side_and_counts_all_of() {
        let (a, b) = (TagId::new(), TagId::new());
        let q = ContactQuery::new().with_tags(
            TagFilter::new()
                .any_of([a, b, a])
                .all_of([b, a, b])
                .none_of([a]),
        );
        let (sql, values) = build(TenantId::new(), &q, 5, None).unwrap();
        assert!(
            sql.contains(
                "(EXISTS (SELECT 1 FROM taggings g WHERE g.tenant_id = $2 \
                 AND g.contact_id = contacts.id AND g.tag_id IN ($3, $4)))"
            ),
            "{sql}"
        );
        assert!(
            sql.contains(
                "g.tenant_id = $5 AND g.contact_id = contacts.id AND g.tag_id IN ($6, $7)) = $8"
            ),
            "all_of counts the deduplicated tags: {sql}"
        );
        assert!(
            sql.contains("(NOT EXISTS (SELECT 1 FROM taggings g WHERE g.tenant_id = $9"),
            "{sql}"
        );
        // The tenant; per side the tenant and its tags; the count; the limit.
        assert_eq!(values.0.len(), 11);
    }

    #[test]
    fn only_a_search_without_filters_writes_its_limit_in() {
        let tenant = TenantId::new();
        let key = ContactSortKey::Time(0, uuid::Uuid::nil());
        let (sql, _) = build(
            tenant,
            &ContactQuery::new().with_sort(ContactSort::CreatedDesc),
            50,
            Some(&key),
        )
        .unwrap();
        assert!(sql.ends_with(r#""id" DESC LIMIT 51"#), "{sql}");
        let filtered = [
            ContactQuery::top_leads(50).with_owner(OwnerId::parse("user:1").unwrap()),
            ContactQuery::top_leads(50).with_email_prefix("ada"),
            ContactQuery::top_leads(50).with_tags(TagFilter::new().any_of([TagId::new()])),
            ContactQuery::top_leads(50).with_min_score(Score::new(10).unwrap()),
        ];
        let unindexed = [
            ContactQuery::new().with_sort(ContactSort::UpdatedDesc),
            ContactQuery::new().with_sort(ContactSort::ScoreDesc),
            ContactQuery::top_leads(50).with_active(false),
            ContactQuery::new()
                .with_active(false)
                .with_sort(ContactSort::NameAsc),
        ];
        for q in filtered.iter().chain(&unindexed) {
            let (sql, values) = build(tenant, q, 50, None).unwrap();
            assert!(
                sql.ends_with(&format!("LIMIT ${}", values.0.len())),
                "{sql}"
            );
        }
    }

    #[test]
    fn a_name_cursor_compares_the_whole_stored_sort_key() {
        let q = ContactQuery::new().with_sort(ContactSort::NameAsc);
        let key = ContactSortKey::Name("b".into(), "a".into(), uuid::Uuid::nil());
        let (sql, values) = build(TenantId::new(), &q, 5, Some(&key)).unwrap();
        assert!(
            sql.contains(r#"(last_name_key, first_name_key, id) > ($2, $3, $4)"#),
            "{sql}"
        );
        assert_eq!(values.0.len(), 5);
    }
}
