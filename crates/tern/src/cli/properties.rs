//! `-D command identifier value` (and `-D command user-property name value`): MQTT 5
//! properties for the packets the command sends, named as mosquitto's clients name them.

use anyhow::{bail, Context};
use tern_client::codec::{
    DisconnectProperties, MqttString, PayloadFormat, PublishProperties, SubscribeProperties,
    UnsubscribeProperties, UserProperties, WillProperties,
};
use tern_client::{Bytes, ClientOptions};

/// Properties given with -D, by packet.
#[derive(Debug, Default, Clone)]
pub(crate) struct PropertySet {
    pub(crate) connect: Vec<(String, String)>,
    pub(crate) connect_user: UserProperties,
    pub(crate) publish: PublishProperties,
    pub(crate) subscribe: SubscribeProperties,
    pub(crate) unsubscribe: UnsubscribeProperties,
    pub(crate) disconnect: DisconnectProperties,
    pub(crate) will: WillProperties,
    /// Packets -D gave properties for.
    pub(crate) commands: Vec<String>,
}

fn number<T: std::str::FromStr>(identifier: &str, value: &str) -> anyhow::Result<T> {
    value
        .parse()
        .ok()
        .with_context(|| format!("invalid value {value:?} for {identifier}"))
}

fn flag(identifier: &str, value: &str) -> anyhow::Result<bool> {
    match number::<u8>(identifier, value)? {
        0 => Ok(false),
        1 => Ok(true),
        _ => bail!("{identifier} must be 0 or 1"),
    }
}

fn format_indicator(value: &str) -> anyhow::Result<PayloadFormat> {
    Ok(if flag("payload-format-indicator", value)? {
        PayloadFormat::Utf8
    } else {
        PayloadFormat::Unspecified
    })
}

fn string(value: &str) -> anyhow::Result<MqttString> {
    Ok(MqttString::new(value)?)
}

fn topic(value: &str) -> anyhow::Result<tern_client::codec::TopicName> {
    Ok(tern_client::message(value, "")?.topic)
}

impl PropertySet {
    /// Parses the words of every -D, in order: as in mosquitto's clients, a property takes
    /// three words (command, identifier, value), a user-property four (… name value).
    pub(crate) fn parse(words: &[String]) -> anyhow::Result<Self> {
        let mut set = Self::default();
        let mut rest = words;
        while !rest.is_empty() {
            let len = if rest.get(1).is_some_and(|w| w == "user-property") {
                4
            } else {
                3
            };
            let (one, after) = rest.split_at(len.min(rest.len()));
            set.add(one)
                .with_context(|| format!("-D {}", one.join(" ")))?;
            rest = after;
        }
        Ok(set)
    }

    fn add(&mut self, words: &[String]) -> anyhow::Result<()> {
        let (command, identifier, value, pair) = match words {
            [command, identifier, value] => (command, identifier.as_str(), value.as_str(), None),
            [command, identifier, name, value] if identifier == "user-property" => (
                command,
                identifier.as_str(),
                value.as_str(),
                Some(name.as_str()),
            ),
            _ => bail!("expects: command identifier value, or command user-property name value"),
        };
        if identifier == "user-property" && pair.is_none() {
            bail!("user-property needs a name and a value");
        }
        let command = command.to_ascii_lowercase();
        let user = |list: &mut UserProperties| -> anyhow::Result<()> {
            let name = pair.unwrap_or_default();
            list.push(&string(name)?, &string(value)?);
            Ok(())
        };
        match (command.as_str(), identifier) {
            ("connect", "user-property") => user(&mut self.connect_user)?,
            (
                "connect",
                "session-expiry-interval" | "receive-maximum" | "maximum-packet-size"
                | "topic-alias-maximum" | "request-problem-information"
                | "request-response-information",
            ) => self.connect.push((identifier.to_owned(), value.to_owned())),
            ("connect" | "auth", "authentication-method" | "authentication-data") => bail!(
                "enhanced authentication (AUTH) is not supported by Tern's client"
            ),
            ("publish", "payload-format-indicator") => {
                self.publish.payload_format_indicator = Some(format_indicator(value)?)
            }
            ("publish", "message-expiry-interval") => {
                self.publish.message_expiry_interval = Some(number(identifier, value)?)
            }
            ("publish", "content-type") => self.publish.content_type = Some(string(value)?),
            ("publish", "response-topic") => self.publish.response_topic = Some(topic(value)?),
            ("publish", "correlation-data") => {
                self.publish.correlation_data = Some(Bytes::from(value.to_owned()))
            }
            ("publish", "user-property") => user(&mut self.publish.user_properties)?,
            ("publish", "topic-alias") => bail!(
                "Tern's client assigns topic aliases itself (up to the broker's Topic Alias Maximum)"
            ),
            ("subscribe", "subscription-identifier") => {
                let id: u32 = number(identifier, value)?;
                if id == 0 || id > 268_435_455 {
                    bail!("subscription-identifier must be 1 to 268435455");
                }
                self.subscribe.subscription_identifier = Some(id);
            }
            ("subscribe", "user-property") => user(&mut self.subscribe.user_properties)?,
            ("unsubscribe", "user-property") => user(&mut self.unsubscribe.user_properties)?,
            ("disconnect", "session-expiry-interval") => {
                self.disconnect.session_expiry_interval = Some(number(identifier, value)?)
            }
            ("disconnect", "reason-string") => {
                self.disconnect.reason_string = Some(string(value)?)
            }
            ("disconnect", "user-property") => user(&mut self.disconnect.user_properties)?,
            ("will", "will-delay-interval") => {
                self.will.will_delay_interval = Some(number(identifier, value)?)
            }
            ("will", "payload-format-indicator") => {
                self.will.payload_format_indicator = Some(format_indicator(value)?)
            }
            ("will", "message-expiry-interval") => {
                self.will.message_expiry_interval = Some(number(identifier, value)?)
            }
            ("will", "content-type") => self.will.content_type = Some(string(value)?),
            ("will", "response-topic") => self.will.response_topic = Some(topic(value)?),
            ("will", "correlation-data") => {
                self.will.correlation_data = Some(Bytes::from(value.to_owned()))
            }
            ("will", "user-property") => user(&mut self.will.user_properties)?,
            ("puback" | "pubrec" | "pubrel" | "pubcomp", _) => bail!(
                "Tern's client acknowledges by itself and sends no properties with {command}"
            ),
            (
                "connect" | "publish" | "subscribe" | "unsubscribe" | "disconnect" | "will"
                | "auth",
                _,
            ) => bail!("{identifier} is not a property of {command}"),
            _ => bail!("unknown command {command:?}"),
        }
        if !self.commands.contains(&command) {
            self.commands.push(command);
        }
        Ok(())
    }

    /// Refuses properties for packets this tool never sends.
    pub(crate) fn only_for(&self, tool: &str, allowed: &[&str]) -> anyhow::Result<()> {
        if let Some(command) = self
            .commands
            .iter()
            .find(|c| !allowed.contains(&c.as_str()))
        {
            bail!(
                "-D {command}: tern {tool} sends no {} packet",
                command.to_uppercase()
            );
        }
        Ok(())
    }

    /// Applies the CONNECT properties to the client options.
    pub(crate) fn apply_connect(&self, options: &mut ClientOptions) -> anyhow::Result<()> {
        for (identifier, value) in &self.connect {
            match identifier.as_str() {
                "session-expiry-interval" => {
                    options.session_expiry_secs = number(identifier, value)?
                }
                "receive-maximum" => {
                    let maximum: u16 = number(identifier, value)?;
                    if maximum == 0 {
                        bail!("receive-maximum must not be 0");
                    }
                    options.receive_maximum = maximum;
                }
                "maximum-packet-size" => {
                    let size: u32 = number(identifier, value)?;
                    if size == 0 {
                        bail!("maximum-packet-size must not be 0");
                    }
                    options.maximum_packet_size = size;
                }
                "topic-alias-maximum" => options.topic_alias_maximum = number(identifier, value)?,
                "request-problem-information" => {
                    options.request_problem_information = Some(flag(identifier, value)?)
                }
                "request-response-information" => {
                    options.request_response_information = Some(flag(identifier, value)?)
                }
                _ => {}
            }
        }
        for (key, value) in self.connect_user.iter() {
            options
                .connect_user_properties
                .push(&MqttString::new(key)?, &MqttString::new(value)?);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::PropertySet;

    fn words(text: &str) -> Vec<String> {
        text.split(' ').map(str::to_owned).collect()
    }

    fn parse(occurrences: &[&str]) -> anyhow::Result<PropertySet> {
        PropertySet::parse(&words(&occurrences.join(" ")))
    }

    #[test]
    fn parses_every_packet_and_refuses_what_does_not_apply() {
        let set = parse(&[
            "publish user-property site north",
            "PUBLISH content-type text/plain",
            "subscribe subscription-identifier 7",
            "will will-delay-interval 5",
            "disconnect session-expiry-interval 0",
        ]);
        let set = set.unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(
            set.publish.content_type.as_ref().map(|c| c.as_str()),
            Some("text/plain")
        );
        assert_eq!(set.will.will_delay_interval, Some(5));
        assert_eq!(set.disconnect.session_expiry_interval, Some(0));
        for bad in [
            "publish bogus 1",
            "puback user-property a b",
            "connect authentication-method x",
            "publish user-property a",
            "subscribe subscription-identifier 0",
            "frobnicate user-property a b",
        ] {
            assert!(parse(&[bad]).is_err(), "{bad}");
        }
    }
}
