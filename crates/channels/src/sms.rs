//! sms
