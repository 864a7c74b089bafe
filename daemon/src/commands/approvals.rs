//! `warden approvals|approve|reject|status`: questions and decisions the
//! running daemon answers over its control socket.

use super::{ask, unexpected, Result};
use crate::{
    config::Paths,
    control::{self, Request, Response},
};

/// `warden approvals`: holds awaiting a decision (or all with `all`).
pub fn approvals(paths: &Paths, all: bool) -> Result<Vec<crate::approvals::Approval>> {
    match ask(paths, &Request::Approvals { all })? {
        Response::Approvals { approvals } => Ok(approvals),
        other => Err(unexpected(other)),
    }
}

/// `warden approve|reject ID`: the daemon identifies the approver from this
/// process's credentials on the socket.
pub fn decide(paths: &Paths, id: u64, approve: bool, reason: Option<&str>) -> Result<String> {
    let request = Request::Decide {
        id,
        approve,
        reason: reason.map(str::to_string),
    };
    match ask(paths, &request)? {
        Response::Ok { message } => Ok(message),
        other => Err(unexpected(other)),
    }
}

/// `warden budget reset AGENT ID --reason TEXT`.
pub fn budget_reset(paths: &Paths, agent: &str, budget: &str, reason: &str) -> Result<String> {
    let request = Request::BudgetReset {
        agent: agent.to_string(),
        budget: budget.to_string(),
        reason: reason.to_string(),
    };
    match ask(paths, &request)? {
        Response::Ok { message } => Ok(message),
        other => Err(unexpected(other)),
    }
}

pub fn status(paths: &Paths) -> Result<control::StatusReport> {
    match ask(paths, &Request::Status)? {
        Response::Status(s) => Ok(*s),
        other => Err(unexpected(other)),
    }
}
