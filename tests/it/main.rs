//! The lanmesh integration suite: one test binary, a module per area, real RabbitMQ and real
//! `lanmesh-node` processes. See `lanmesh_tests` for the environment it reads.

mod amqp_conformance;
mod amqp_recovery;
