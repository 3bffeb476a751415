-- Runs once, on the first start of an empty data volume: the ECP ledger's
-- database beside Temporal's own (which auto-setup creates).
CREATE DATABASE ecp;
