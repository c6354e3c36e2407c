//! passthrough (test and benchmark only): a filter that changes nothing. Stacking it measures
//! what a filter layer costs by itself. It is also the whole of what a filter must write: every
//! call it does not name goes to the layer below.

#[derive(Default)]
struct Passthrough;

impl nbdbox_filter_sdk::Filter for Passthrough {
    const NAME: &'static str = "passthrough";
    type Connection = ();
    fn open(&self, _: &nbdbox_filter_sdk::Next, _: bool, _: &str) -> nbdbox_filter_sdk::Result<()> {
        Ok(())
    }
}

nbdbox_filter_sdk::filter!(Passthrough);
