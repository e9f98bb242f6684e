//! Provisional: replaced by the real tenants module.
use std::collections::HashMap;
use std::sync::Arc;
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ShardIdx(pub u16);
#[derive(Clone, Default, Debug)]
pub struct TenantTable(Arc<HashMap<Box<str>, ShardIdx>>);
impl TenantTable {
    pub fn get(&self, name: &str) -> Option<ShardIdx> {
        self.0.get(name).copied()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
