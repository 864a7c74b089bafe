//! `warden`: the command line. Each verb parses its arguments, calls one
//! library function and maps the result to an exit code (0 success, 1
//! failure, 2 usage; `warden run` exits with the command's own status).
//! The grammar is in `cli.rs`, the verbs in `warden::commands`, what they
//! print in `warden::commands::render`.

mod cli;

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use cli::{AgentCmd, BudgetCmd, Cli, Cmd, EvidenceCmd, FreezeCmd, LogCmd, PolicyCmd, ReviewCmd};
use warden::{
    commands::{self, render, AddAgent},
    config::Paths,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let daemon = matches!(cli.cmd, Cmd::Daemon);
    let default_level = if daemon { "info" } else { "warn" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WARDEN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            // Each cause once: many errors name theirs in their message.
            eprintln!("warden: error: {}", warden::error_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// The daemon until SIGTERM or Ctrl-C.
fn run_daemon(paths: Paths) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the async runtime")?;
    runtime.block_on(async {
        let shutdown = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("install SIGTERM handler");
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        };
        warden::daemon::run(paths, shutdown).await
    })?;
    Ok(())
}

/// A listing as a pretty JSON document or as its table.
fn listing<T: serde::Serialize + ?Sized>(
    json: bool,
    value: &T,
    table: impl FnOnce(&T) -> String,
) -> anyhow::Result<String> {
    Ok(if json {
        render::json(value)?
    } else {
        table(value)
    })
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let paths = cli.paths;
    match cli.cmd {
        Cmd::Daemon => run_daemon(paths)?,
        Cmd::Agent(AgentCmd::Add {
            name,
            owner,
            policy,
            cgroup,
            parent,
        }) => {
            let request = AddAgent {
                name: &name,
                owner: &owner,
                policy: &policy,
                adopt: cgroup.as_deref(),
                parent: parent.as_deref(),
            };
            let (agent, note) = commands::agent_add(&paths, &request)?;
            print!("{}", render::agent_added(&agent, &note));
        }
        Cmd::Agent(AgentCmd::List { json }) => {
            let agents = commands::agent_list(&paths)?;
            print!("{}", listing(json, &agents[..], render::agent_list)?);
        }
        Cmd::Agent(AgentCmd::Show { name, json }) => {
            let agent = commands::agent_show(&paths, &name)?;
            print!("{}", listing(json, &agent, render::agent)?);
        }
        Cmd::Agent(AgentCmd::Remove { name }) => {
            print!(
                "{}",
                render::agent_removed(&commands::agent_remove(&paths, &name)?)
            );
        }
        Cmd::Run {
            agent,
            user,
            keep_fd,
            cmd,
        } => {
            commands::run(&paths, &agent, user.as_deref(), &keep_fd, &cmd)?;
        }
        Cmd::Policy(PolicyCmd::Check { files }) => {
            let mut failed = false;
            for file in files {
                match commands::policy_check(&file) {
                    Ok(p) => print!("{}", render::policy_ok(&file, &p)),
                    Err(e) => {
                        eprintln!("{e}");
                        failed = true;
                    }
                }
            }
            if failed {
                return Ok(ExitCode::FAILURE);
            }
        }
        Cmd::Policy(PolicyCmd::Suggest {
            agent,
            since,
            out,
            diff,
        }) => {
            let (suggestion, changes) =
                commands::policy_suggest(&paths, &agent, since.as_deref(), diff.as_deref())?;
            match &out {
                Some(file) => {
                    std::fs::write(file, &suggestion.yaml)
                        .with_context(|| format!("write {}", file.display()))?;
                    eprintln!(
                        "wrote {} ({} rules from {} entries)",
                        file.display(),
                        suggestion.policy.rules.len(),
                        suggestion.entries
                    );
                }
                None if changes.is_none() => print!("{}", suggestion.yaml),
                None => {}
            }
            if let Some(changes) = changes {
                print!("{changes}");
            }
        }
        Cmd::Policy(PolicyCmd::Shadow {
            agent,
            candidate,
            since,
            json,
        }) => {
            let report = commands::policy_shadow(&paths, &agent, &candidate, since.as_deref())?;
            print!("{}", listing(json, &report, render::shadow)?);
        }
        Cmd::Policy(PolicyCmd::Reload) => {
            commands::policy_reload(&paths)?;
            println!("policies reloaded");
        }
        Cmd::Policy(PolicyCmd::History {
            agent,
            proposals,
            json,
        }) => {
            let versions = commands::policy_history(&paths, agent.as_deref())?;
            let props = commands::policy_proposals(&paths, agent.as_deref())?;
            if json && proposals {
                print!("{}", render::json(&props[..])?);
            } else if json {
                print!("{}", render::json(&versions[..])?);
            } else {
                print!("{}", render::policy_history(&versions));
                print!("{}", render::proposals(&props));
            }
        }
        Cmd::Review(ReviewCmd::Start) => {
            let seq = commands::review::review_start(&paths)?;
            println!("access review started (seq {seq})");
        }
        Cmd::Review(ReviewCmd::Sign {
            decision,
            agents,
            comment,
        }) => {
            for line in commands::review::review_sign(&paths, decision, &agents, &comment)? {
                println!("{line}");
            }
        }
        Cmd::Review(ReviewCmd::Status { json }) => {
            let now = warden::clock::now_ns();
            let status = commands::review::review_status(&paths, now)?;
            print!("{}", listing(json, &status[..], render::review_status)?);
        }
        Cmd::Freeze(FreezeCmd::Override { agent, reason }) => {
            println!("{}", commands::freeze_override(&paths, &agent, &reason)?);
        }
        Cmd::Policy(PolicyCmd::Propose { agent, file }) => {
            println!("{}", commands::policy_propose(&paths, &agent, &file)?);
        }
        Cmd::Policy(PolicyCmd::Review {
            id,
            approve,
            reject: _,
            comment,
        }) => {
            println!(
                "{}",
                commands::policy_review(&paths, id, approve, comment.as_deref())?
            );
        }
        Cmd::Log(args) => match args.cmd {
            Some(LogCmd::Tail {
                format,
                after,
                no_follow,
            }) => {
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                commands::tail(&paths, after, !no_follow, &mut |e| {
                    let line = render::tail_line(e, format);
                    // A closed pipe (the SIEM shipper went away) ends the tail.
                    writeln!(out, "{line}").and_then(|()| out.flush()).is_ok()
                })?;
            }
            Some(LogCmd::Checkpoints) => {
                print!("{}", render::json(&commands::checkpoints(&paths)?)?);
            }
            Some(LogCmd::Verify {
                anchor,
                completeness,
            }) => {
                let verified = commands::log_verify(&paths, &anchor)?;
                print!("{}", render::verified(&verified));
                if completeness {
                    match render::completeness(&commands::completeness(&paths)?) {
                        Ok(text) => print!("{text}"),
                        Err(text) => {
                            eprint!("{text}");
                            return Ok(ExitCode::FAILURE);
                        }
                    }
                }
            }
            None if args.lineage.is_some() => {
                let seq = args.lineage.unwrap_or_default();
                let lineage = commands::lineage(&paths, seq)?;
                if args.json {
                    print!("{}", render::json(&lineage)?);
                } else {
                    print!("{}", render::lineage(&lineage));
                }
            }
            None => {
                let query = commands::LogQuery {
                    agent: args.agent,
                    kind: args.kind,
                    decision: args.decision,
                    since: args.since,
                    limit: args.limit,
                };
                if args.count {
                    let c = commands::log_count(&paths, &query)?;
                    if args.json {
                        println!("{}", serde_json::to_string(&c)?);
                    } else {
                        println!("entries {} counted {}", c.entries, c.counted);
                    }
                    return Ok(ExitCode::SUCCESS);
                }
                let entries = commands::log(&paths, &query)?;
                if args.json {
                    print!("{}", render::log_json(&entries)?);
                } else {
                    print!("{}", render::log_table(&entries));
                }
            }
        },
        Cmd::Evidence(EvidenceCmd::Export {
            out,
            from,
            to,
            agent,
            full_chain,
        }) => {
            let manifest = commands::evidence_export(
                &paths,
                &out,
                from.as_deref(),
                to.as_deref(),
                agent,
                full_chain,
            )?;
            print!("{}", render::exported(&manifest, &out));
        }
        Cmd::Evidence(EvidenceCmd::Archive { before, out }) => {
            let done = commands::evidence_archive(&paths, &before, &out)?;
            println!(
                "archived {} entries (seq {}..={}) to {}, verified, and pruned them; the log now starts after seq {} (checkpoint {}); recorded as entry {}",
                done.entries,
                done.plan.base + 1,
                done.plan.through,
                done.out.display(),
                done.plan.through,
                done.plan.checkpoint_id,
                done.entry.seq
            );
        }
        Cmd::Evidence(EvidenceCmd::Verify { dir, key }) => {
            let report = commands::evidence_verify(&dir, key.as_deref())?;
            match render::bundle(&report, &dir) {
                Ok(text) => print!("{text}"),
                Err(text) => {
                    eprint!("{text}");
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        Cmd::Kill {
            name,
            reason,
            freeze,
        } => {
            let report = commands::kill(&paths, &name, &reason, freeze)?;
            print!("{}", render::killed(&report));
        }
        Cmd::Revive { name, reason } => {
            print!(
                "{}",
                render::revived(&commands::revive(&paths, &name, &reason)?)
            );
        }
        Cmd::Uninstall => {
            let removed = commands::uninstall(&paths)?;
            print!("{}", render::uninstalled(removed, &paths.pin_dir));
        }
        Cmd::Approvals { all, json } => {
            let list = commands::approvals(&paths, all)?;
            print!("{}", listing(json, &list[..], render::approvals)?);
        }
        Cmd::Approve { id, reason } => {
            let message = commands::decide(&paths, id, true, reason.as_deref())?;
            print!("{}", render::decided(&message));
        }
        Cmd::Reject { id, reason } => {
            let message = commands::decide(&paths, id, false, reason.as_deref())?;
            print!("{}", render::decided(&message));
        }
        Cmd::Alerts { agent, limit, json } => {
            let query = commands::LogQuery {
                agent,
                kind: Some("alert".into()),
                decision: None,
                since: None,
                limit: Some(limit),
            };
            let entries = commands::log(&paths, &query)?;
            if json {
                print!("{}", render::log_json(&entries)?);
            } else {
                print!("{}", render::alerts(&entries));
            }
        }
        Cmd::Status { json } => {
            let status = commands::status(&paths)?;
            print!("{}", listing(json, &status, render::status)?);
        }
        Cmd::Budget {
            cmd: BudgetCmd::Reset { agent, id, reason },
        } => {
            let message = commands::budget_reset(&paths, &agent, &id, &reason)?;
            print!("{}", render::decided(&message));
        }
    }
    Ok(ExitCode::SUCCESS)
}
