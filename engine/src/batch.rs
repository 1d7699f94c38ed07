//! Coalesced messages from the data path to an actor.
//!
//! Thousands of connections a second each have a few things to tell the actors (an interface's
//! counters, the dashboard's connection table). One actix message per event would wake the
//! actor thread for each — a futex wake and two context switches per message, more CPU than
//! the connection's own work. A [`Batched`] sender instead appends the event to a queue shared
//! with the actor and sends a [`Wake`] only when the queue was empty; the actor collects the
//! whole queue a moment later ([`Batched::take`]), so a burst costs one wake-up however many
//! events it carries.

use std::sync::{Arc, Mutex};

use actix::prelude::*;

/// "Events are queued for you": sent to the actor when its queue goes from empty to non-empty,
/// and for every [`Batched::send_now`]. The actor should collect the queue with
/// [`Batched::take`]: at once when `urgent`, else typically after a short delay so that more
/// events join the batch.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Wake {
    /// The sender wants the queue collected now (a failure the actor must react to).
    pub urgent: bool,
}

/// The sending and collecting ends of one actor's event queue (clones share it).
pub struct Batched<M> {
    shared: Arc<Shared<M>>,
}

struct Shared<M> {
    queue: Mutex<Vec<M>>,
    /// `None`: a detached queue (tests), nobody is woken.
    wake: Option<Recipient<Wake>>,
}

impl<M> Clone for Batched<M> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<M> std::fmt::Debug for Batched<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batched").finish_non_exhaustive()
    }
}

impl<M: Send> Batched<M> {
    /// A queue whose owner is woken through `wake`.
    pub fn new(wake: Recipient<Wake>) -> Self {
        Self {
            shared: Arc::new(Shared {
                queue: Mutex::new(Vec::new()),
                wake: Some(wake),
            }),
        }
    }

    /// A queue nobody is woken for (events wait for [`Batched::take`]); for tests.
    #[cfg(test)]
    pub fn detached() -> Self {
        Self {
            shared: Arc::new(Shared {
                queue: Mutex::new(Vec::new()),
                wake: None,
            }),
        }
    }

    /// Queues `event`; wakes the actor if nothing was waiting for it yet. Never blocks on the
    /// actor.
    pub fn send(&self, event: M) {
        let first = {
            let mut queue = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
            queue.push(event);
            queue.len() == 1
        };
        if first && let Some(wake) = &self.shared.wake {
            wake.do_send(Wake { urgent: false });
        }
    }

    /// Queues `event` and asks the actor to collect the queue at once.
    pub fn send_now(&self, event: M) {
        self.shared
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(event);
        if let Some(wake) = &self.shared.wake {
            wake.do_send(Wake { urgent: true });
        }
    }

    /// Everything queued so far, oldest first (for the actor).
    pub fn take(&self) -> Vec<M> {
        std::mem::take(&mut *self.shared.queue.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    struct Counter {
        inbox: Option<Batched<u32>>,
        wakes: u32,
        got: Vec<u32>,
    }

    impl Actor for Counter {
        type Context = Context<Self>;
    }

    impl Handler<Wake> for Counter {
        type Result = ();
        fn handle(&mut self, _: Wake, ctx: &mut Context<Self>) {
            self.wakes += 1;
            ctx.run_later(Duration::from_millis(200), |act, _| {
                let batch = act.inbox.as_ref().unwrap().take();
                act.got.extend(batch);
            });
        }
    }

    #[derive(Message)]
    #[rtype(result = "(u32, Vec<u32>)")]
    struct Report;

    impl Handler<Report> for Counter {
        type Result = MessageResult<Report>;
        fn handle(&mut self, _: Report, _: &mut Context<Self>) -> Self::Result {
            MessageResult((self.wakes, self.got.clone()))
        }
    }

    #[actix::test]
    async fn a_burst_wakes_the_actor_once_and_loses_nothing() {
        let mut inbox = None;
        let addr = Counter::create(|ctx| {
            let b = Batched::new(ctx.address().recipient());
            inbox = Some(b.clone());
            Counter {
                inbox: Some(b),
                wakes: 0,
                got: Vec::new(),
            }
        });
        let inbox = inbox.unwrap();
        let senders: Vec<_> = (0..4)
            .map(|t| {
                let inbox = inbox.clone();
                std::thread::spawn(move || (0..250).for_each(|i| inbox.send(t * 1000 + i)))
            })
            .collect();
        senders.into_iter().for_each(|s| s.join().unwrap());
        tokio::time::sleep(Duration::from_millis(400)).await;
        let (wakes, mut got) = addr.send(Report).await.unwrap();
        assert_eq!(wakes, 1, "one wake for the whole burst");
        got.sort_unstable();
        let want: Vec<u32> = (0..4)
            .flat_map(|t| (0..250).map(move |i| t * 1000 + i))
            .collect();
        assert_eq!(got, want);
        // After a collection, the next event wakes the actor again.
        inbox.send(7);
        tokio::time::sleep(Duration::from_millis(400)).await;
        let (wakes, got) = addr.send(Report).await.unwrap();
        assert_eq!((wakes, got.last().copied()), (2, Some(7)));
    }
}
