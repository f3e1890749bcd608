//! Forwards aya-log records from the data path (debug level only) to `log`.
use std::time::Duration;

pub fn spawn(mut logger: aya_log::EbpfLogger<&'static dyn log::Log>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            logger.flush();
        }
    });
}
