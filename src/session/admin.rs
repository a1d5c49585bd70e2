//! Admin extensions (facts model control surface).

use super::{Next, Session, SessionError};
use crate::protocol::{AdminVerb, Status};

impl Session {
    pub(super) async fn admin(&mut self, tag: Vec<u8>, _verb: AdminVerb, _args: Vec<Vec<u8>>) -> Result<Next, SessionError> {
        self.tagged(&tag, Status::No, "admin extension not available yet").await?;
        Ok(Next::Continue)
    }
}
