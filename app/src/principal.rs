//! Who is asking: a subject and the highest role its token carries. How a principal is
//! authenticated is the transport's business (JWT in the HTTP layer); what it may do is
//! decided here and in the services.

use crate::error::AppError;

/// What a principal may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Reads published videos and plays them.
    Viewer,
    /// Also registers videos and changes their own.
    Creator,
    /// Also changes any video and uses the admin endpoints.
    Admin,
}

impl Role {
    /// The role a token's `role` claim names.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "viewer" => Some(Self::Viewer),
            "creator" => Some(Self::Creator),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }

    /// The name a token carries.
    pub fn name(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Creator => "creator",
            Self::Admin => "admin",
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's subject.
    pub subject: String,
    /// The highest role the token carries.
    pub role: Role,
}

impl Principal {
    /// `subject` with `role`.
    pub fn new(subject: impl Into<String>, role: Role) -> Self {
        Self {
            subject: subject.into(),
            role,
        }
    }

    /// Whether this principal may change or see the private state of a video owned by `owner`.
    pub fn owns_or_admin(&self, owner: &str) -> bool {
        self.role == Role::Admin || (self.role == Role::Creator && self.subject == owner)
    }

    /// Refuses principals below `role`.
    ///
    /// # Errors
    /// FORBIDDEN.
    pub fn require(&self, role: Role) -> Result<(), AppError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(AppError::forbidden(format!("this needs the {} role", role.name())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use Principal as P;

    fn who(subject: &str, role: Role) -> Principal {
        P::new(subject, role)
    }

    #[test]
    fn owners_and_admins_reach_a_video_and_nobody_else() {
        assert!(who("alice", Role::Creator).owns_or_admin("alice"));
        assert!(!who("bob", Role::Creator).owns_or_admin("alice"));
        assert!(
            !who("alice", Role::Viewer).owns_or_admin("alice"),
            "a viewer owns nothing"
        );
        assert!(who("root", Role::Admin).owns_or_admin("alice"));
    }

    #[test]
    fn roles_include_the_ones_below() {
        assert!(who("a", Role::Admin).require(Role::Creator).is_ok());
        let refused = who("v", Role::Viewer).require(Role::Creator).err();
        assert_eq!(
            refused.map(|e| (e.kind, e.message)),
            Some((crate::ErrorKind::Forbidden, "this needs the creator role".to_owned()))
        );
        for role in [Role::Viewer, Role::Creator, Role::Admin] {
            assert_eq!(Role::from_name(role.name()), Some(role));
        }
        assert_eq!(Role::from_name("root"), None);
    }
}
