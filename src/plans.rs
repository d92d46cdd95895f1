//! Statements planned once per session. Linking a document runs a few short catalog queries,
//! and parsing and planning them cost more than running them (a profile of `UPDATE ... SET
//! entities = belink_link(body)` over 100 abstracts: 40 % of the backend's time went to parse
//! analysis and planning). PostgreSQL re-plans a kept statement itself when a table or index
//! it uses changes.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use pgrx::datum::DatumWithOid;
use pgrx::spi::{OwnedPreparedStatement, SpiClient, SpiTupleTable};
use pgrx::PgOid;

use crate::error::OrRaise;

thread_local! {
    static KEPT: RefCell<HashMap<String, Rc<OwnedPreparedStatement>>> = RefCell::new(HashMap::new());
}

/// Runs `query` through this session's kept plan for it (made on first use, with `types` as
/// its parameter types; `args` must have those types, in order). `context` names the step in
/// an error.
pub fn select<'conn>(
    client: &SpiClient<'conn>,
    query: &str,
    types: &[PgOid],
    args: &[DatumWithOid<'_>],
    context: &str,
) -> SpiTupleTable<'conn> {
    let plan = match KEPT.with(|kept| kept.borrow().get(query).cloned()) {
        Some(plan) => plan,
        None => {
            let plan = Rc::new(client.prepare(query, types).or_raise(context).keep());
            KEPT.with(|kept| kept.borrow_mut().insert(query.to_string(), plan.clone()));
            plan
        }
    };
    client.select(&*plan, None, args).or_raise(context)
}
