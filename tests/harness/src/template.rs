//! Reads `template.yaml` (SAM/CloudFormation with short-form intrinsics), resolves the
//! intrinsics the project uses, provisions the declared data resources in the emulator and
//! computes each function's environment — so tests and `cargo xtask invoke` cannot drift
//! from what the template deploys.

use std::collections::BTreeMap;
use std::path::Path;

use aws_config::SdkConfig;
use serde_norway::{Mapping, Value};

use crate::HarnessError;

pub const ACCOUNT: &str = "123456789012";
pub const REGION: &str = "us-east-1";
pub const STACK: &str = "ssm-autopilot";

pub struct Template {
    root: Value,
    pub stack: String,
    pub params: BTreeMap<String, String>,
}

fn err(msg: impl Into<String>) -> HarnessError {
    HarnessError::Template(msg.into())
}

impl Template {
    pub fn load(path: &Path) -> Result<Self, HarnessError> {
        let text = std::fs::read_to_string(path).map_err(HarnessError::io("read template"))?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Self, HarnessError> {
        let root: Value = serde_norway::from_str(text).map_err(|e| err(e.to_string()))?;
        let mut params = BTreeMap::new();
        if let Some(ps) = root.get("Parameters").and_then(Value::as_mapping) {
            for (k, v) in ps {
                if let (Some(k), Some(d)) = (k.as_str(), v.get("Default")) {
                    params.insert(k.to_owned(), scalar(d).unwrap_or_default());
                }
            }
        }
        Ok(Self {
            root,
            stack: STACK.to_owned(),
            params,
        })
    }

    /// Overrides a template parameter (as `sam deploy --parameter-overrides` would).
    pub fn set_param(&mut self, name: &str, value: &str) {
        self.params.insert(name.to_owned(), value.to_owned());
    }

    pub fn resources(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.root
            .get("Resources")
            .and_then(Value::as_mapping)
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.as_str()?, v)))
    }

    pub fn resource(&self, logical: &str) -> Option<&Value> {
        self.root.get("Resources")?.get(logical)
    }

    pub fn resource_type(&self, logical: &str) -> Option<&str> {
        self.resource(logical)?.get("Type")?.as_str()
    }

    fn props(&self, logical: &str) -> Option<&Value> {
        self.resource(logical)?.get("Properties")
    }

    /// The physical name the stack gives a resource: its explicit name property when set,
    /// else `<stack>-<LogicalId>` (lower case where AWS requires it).
    pub fn physical_name(&self, logical: &str) -> Result<String, HarnessError> {
        let ty = self.resource_type(logical).unwrap_or_default();
        let name_prop = match ty {
            "AWS::DynamoDB::Table" => "TableName",
            "AWS::S3::Bucket" => "BucketName",
            "AWS::Events::EventBus" | "AWS::SSM::Parameter" | "AWS::Scheduler::Schedule" => "Name",
            "AWS::SQS::Queue" => "QueueName",
            "AWS::SNS::Topic" => "TopicName",
            "AWS::Serverless::Function" | "AWS::Lambda::Function" => "FunctionName",
            "AWS::IAM::Role" => "RoleName",
            "AWS::SSM::Document" => "Name",
            _ => "Name",
        };
        if let Some(v) = self.props(logical).and_then(|p| p.get(name_prop)) {
            return self.resolve_str(v);
        }
        let generated = format!("{}-{}", self.stack, logical);
        Ok(if ty == "AWS::S3::Bucket" {
            generated.to_ascii_lowercase()
        } else {
            generated
        })
    }

    fn attribute(&self, logical: &str, attr: &str) -> Result<String, HarnessError> {
        let ty = self
            .resource_type(logical)
            .ok_or_else(|| err(format!("unknown resource {logical}")))?;
        let name = self.physical_name(logical)?;
        let (a, r) = (ACCOUNT, REGION);
        Ok(match (ty, attr) {
            ("AWS::DynamoDB::Table", "Arn") => format!("arn:aws:dynamodb:{r}:{a}:table/{name}"),
            ("AWS::S3::Bucket", "Arn") => format!("arn:aws:s3:::{name}"),
            ("AWS::S3::Bucket", "DomainName") => format!("{name}.s3.amazonaws.com"),
            ("AWS::Events::EventBus", "Arn") => format!("arn:aws:events:{r}:{a}:event-bus/{name}"),
            ("AWS::Events::EventBus", "Name") => name,
            ("AWS::SQS::Queue", "Arn") => format!("arn:aws:sqs:{r}:{a}:{name}"),
            ("AWS::SQS::Queue", "QueueUrl") => format!("https://sqs.{r}.amazonaws.com/{a}/{name}"),
            ("AWS::SQS::Queue", "QueueName") => name,
            ("AWS::SNS::Topic", "TopicArn") => format!("arn:aws:sns:{r}:{a}:{name}"),
            ("AWS::SNS::Topic", "TopicName") => name,
            ("AWS::IAM::Role", "Arn") => format!("arn:aws:iam::{a}:role/{name}"),
            ("AWS::Serverless::Function" | "AWS::Lambda::Function", "Arn") => {
                format!("arn:aws:lambda:{r}:{a}:function:{name}")
            }
            ("AWS::SSM::Document", _) => format!("arn:aws:ssm:{r}:{a}:document/{name}"),
            (_, "Arn") => format!("arn:aws:::{a}:{name}"),
            _ => name,
        })
    }

    fn reference(&self, name: &str) -> Result<String, HarnessError> {
        match name {
            "AWS::Region" => return Ok(REGION.to_owned()),
            "AWS::AccountId" => return Ok(ACCOUNT.to_owned()),
            "AWS::StackName" => return Ok(self.stack.clone()),
            "AWS::Partition" => return Ok("aws".to_owned()),
            "AWS::URLSuffix" => return Ok("amazonaws.com".to_owned()),
            "AWS::StackId" => {
                return Ok(format!(
                    "arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/{}/local",
                    self.stack
                ));
            }
            _ => {}
        }
        if let Some(p) = self.params.get(name) {
            return Ok(p.clone());
        }
        match self.resource_type(name) {
            Some("AWS::SQS::Queue") => self.attribute(name, "QueueUrl"),
            Some("AWS::SNS::Topic") => self.attribute(name, "TopicArn"),
            Some(_) => self.physical_name(name),
            None => Err(err(format!("!Ref to unknown {name}"))),
        }
    }

    fn condition(&self, name: &str) -> Result<bool, HarnessError> {
        let c = self
            .root
            .get("Conditions")
            .and_then(|c| c.get(name))
            .ok_or_else(|| err(format!("unknown condition {name}")))?;
        self.eval_bool(c)
    }

    fn eval_bool(&self, v: &Value) -> Result<bool, HarnessError> {
        let (tag, inner) = intrinsic(v).ok_or_else(|| err("condition is not an intrinsic"))?;
        let items = inner.as_sequence();
        match tag {
            "Equals" => {
                let s = items.ok_or_else(|| err("!Equals needs a list"))?;
                let a = s.first().map(|x| self.resolve_str(x)).transpose()?;
                let b = s.get(1).map(|x| self.resolve_str(x)).transpose()?;
                Ok(a == b)
            }
            "Not" => {
                Ok(!self.eval_bool(items.and_then(|s| s.first()).ok_or_else(|| err("!Not"))?)?)
            }
            "And" => items
                .into_iter()
                .flatten()
                .try_fold(true, |acc, x| Ok(acc && self.eval_bool(x)?)),
            "Or" => items
                .into_iter()
                .flatten()
                .try_fold(false, |acc, x| Ok(acc || self.eval_bool(x)?)),
            "Condition" => self.condition(inner.as_str().unwrap_or_default()),
            other => Err(err(format!("unsupported condition function {other}"))),
        }
    }

    /// Resolves a value to a string; lists are joined with commas (as CloudFormation does
    /// for environment variables built with !Join).
    pub fn resolve_str(&self, v: &Value) -> Result<String, HarnessError> {
        match self.resolve(v)? {
            Value::Sequence(s) => Ok(s.iter().filter_map(scalar).collect::<Vec<_>>().join(",")),
            other => {
                scalar(&other).ok_or_else(|| err(format!("cannot make a string of {other:?}")))
            }
        }
    }

    /// Resolves intrinsics recursively.
    pub fn resolve(&self, v: &Value) -> Result<Value, HarnessError> {
        if let Some((tag, inner)) = intrinsic(v) {
            return Ok(match tag {
                "Ref" if inner.as_str() == Some("AWS::NoValue") => Value::Null,
                "Ref" => Value::String(self.reference(inner.as_str().unwrap_or_default())?),
                "GetAtt" => {
                    let (res, attr) = match inner {
                        Value::String(s) => {
                            s.split_once('.').map(|(a, b)| (a.to_owned(), b.to_owned()))
                        }
                        Value::Sequence(s) => match (
                            s.first().and_then(Value::as_str),
                            s.get(1).and_then(Value::as_str),
                        ) {
                            (Some(a), Some(b)) => Some((a.to_owned(), b.to_owned())),
                            _ => None,
                        },
                        _ => None,
                    }
                    .ok_or_else(|| err("bad !GetAtt"))?;
                    Value::String(self.attribute(&res, &attr)?)
                }
                "Sub" => Value::String(self.sub(inner)?),
                "Join" => {
                    let s = inner
                        .as_sequence()
                        .ok_or_else(|| err("!Join needs a list"))?;
                    let delim = s
                        .first()
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned();
                    let parts = match s.get(1).map(|x| self.resolve(x)).transpose()? {
                        Some(Value::Sequence(p)) => p,
                        // A `CommaDelimitedList` parameter (kept as its text) is a list.
                        Some(Value::String(text)) if !text.is_empty() => text
                            .split(',')
                            .map(|p| Value::String(p.to_owned()))
                            .collect(),
                        _ => Vec::new(),
                    };
                    let parts: Result<Vec<String>, _> =
                        parts.iter().map(|p| self.resolve_str(p)).collect();
                    Value::String(parts?.join(&delim))
                }
                "If" => {
                    let s = inner.as_sequence().ok_or_else(|| err("!If needs a list"))?;
                    let cond = s.first().and_then(Value::as_str).unwrap_or_default();
                    let pick = if self.condition(cond)? {
                        s.get(1)
                    } else {
                        s.get(2)
                    };
                    self.resolve(pick.unwrap_or(&Value::Null))?
                }
                "Select" => {
                    let s = inner
                        .as_sequence()
                        .ok_or_else(|| err("!Select needs a list"))?;
                    let i: usize = self
                        .resolve_str(s.first().unwrap_or(&Value::Null))?
                        .parse()
                        .unwrap_or(0);
                    match s.get(1).map(|x| self.resolve(x)).transpose()? {
                        Some(Value::Sequence(list)) => list.get(i).cloned().unwrap_or(Value::Null),
                        _ => Value::Null,
                    }
                }
                "Split" => {
                    let s = inner
                        .as_sequence()
                        .ok_or_else(|| err("!Split needs a list"))?;
                    let delim = s.first().and_then(Value::as_str).unwrap_or(",").to_owned();
                    let text = self.resolve_str(s.get(1).unwrap_or(&Value::Null))?;
                    Value::Sequence(
                        text.split(delim.as_str())
                            .map(|p| Value::String(p.to_owned()))
                            .collect(),
                    )
                }
                "Equals" | "Not" | "And" | "Or" | "Condition" => Value::Bool(self.eval_bool(v)?),
                other => return Err(err(format!("unsupported intrinsic {other}"))),
            });
        }
        Ok(match v {
            // `!Ref AWS::NoValue` (usually behind `!If`) removes the list item, as in CloudFormation.
            Value::Sequence(s) => Value::Sequence(
                s.iter()
                    .map(|x| Ok((intrinsic(x).is_some(), self.resolve(x)?)))
                    .filter(|r| !matches!(r, Ok((true, Value::Null))))
                    .map(|r| r.map(|(_, x)| x))
                    .collect::<Result<_, HarnessError>>()?,
            ),
            Value::Mapping(m) => {
                let mut out = Mapping::new();
                for (k, x) in m {
                    out.insert(k.clone(), self.resolve(x)?);
                }
                Value::Mapping(out)
            }
            other => other.clone(),
        })
    }

    fn sub(&self, inner: &Value) -> Result<String, HarnessError> {
        let (text, vars) = match inner {
            Value::String(s) => (s.clone(), None),
            Value::Sequence(s) => (
                s.first()
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                s.get(1).and_then(Value::as_mapping),
            ),
            _ => return Err(err("bad !Sub")),
        };
        let mut out = String::new();
        let mut rest = text.as_str();
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after.find('}').ok_or_else(|| err("unclosed ${ in !Sub"))?;
            let name = &after[..end];
            if let Some(literal) = name.strip_prefix('!') {
                out.push_str("${");
                out.push_str(literal);
                out.push('}');
            } else if let Some(v) = vars.and_then(|m| m.get(name)) {
                out.push_str(&self.resolve_str(v)?);
            } else if let Some((res, attr)) =
                name.split_once('.').filter(|_| !name.starts_with("AWS::"))
            {
                out.push_str(&self.attribute(res, attr)?);
            } else {
                out.push_str(&self.reference(name)?);
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// Logical ids of the functions.
    pub fn functions(&self) -> Vec<String> {
        self.resources()
            .filter(|(_, v)| {
                v.get("Type").and_then(Value::as_str) == Some("AWS::Serverless::Function")
            })
            .map(|(k, _)| k.to_owned())
            .collect()
    }

    /// The function whose build metadata names `binary` (cargo-lambda's `Binary`).
    pub fn function_for_binary(&self, binary: &str) -> Option<String> {
        self.functions().into_iter().find(|f| {
            self.resource(f)
                .and_then(|r| r.get("Metadata"))
                .and_then(|m| m.get("BuildProperties"))
                .and_then(|b| b.get("Binary"))
                .and_then(Value::as_str)
                == Some(binary)
        })
    }

    /// Environment variables of a function: `Globals.Function.Environment` merged with its own.
    pub fn function_env(&self, logical: &str) -> Result<BTreeMap<String, String>, HarnessError> {
        let mut env = BTreeMap::new();
        let globals = self.root.get("Globals").and_then(|g| g.get("Function"));
        let own = self.props(logical);
        for src in [globals, own].into_iter().flatten() {
            if let Some(vars) = src
                .get("Environment")
                .and_then(|e| e.get("Variables"))
                .and_then(Value::as_mapping)
            {
                for (k, v) in vars {
                    let Some(k) = k.as_str() else { continue };
                    // `!Ref AWS::NoValue` removes the variable, as in CloudFormation.
                    match self.resolve(v)? {
                        Value::Null => env.remove(k),
                        r => env.insert(k.to_owned(), self.resolve_str(&r)?),
                    };
                }
            }
        }
        Ok(env)
    }

    /// `LoggingConfig.ApplicationLogLevel` of a function (Globals as the fallback): Lambda
    /// passes it to the runtime as `AWS_LAMBDA_LOG_LEVEL`.
    pub fn function_log_level(&self, logical: &str) -> Option<String> {
        let globals = self.root.get("Globals").and_then(|g| g.get("Function"));
        [self.props(logical), globals]
            .into_iter()
            .flatten()
            .find_map(|p| p.get("LoggingConfig")?.get("ApplicationLogLevel"))
            .and_then(|v| self.resolve_str(v).ok())
            .filter(|l| !l.is_empty())
    }

    /// Memory (MB) and timeout (s) of a function, with Globals as the fallback.
    pub fn function_limits(&self, logical: &str) -> (u32, u64) {
        let globals = self.root.get("Globals").and_then(|g| g.get("Function"));
        let get = |key: &str| {
            self.props(logical)
                .and_then(|p| p.get(key))
                .or_else(|| globals.and_then(|g| g.get(key)))
                .and_then(|v| self.resolve_str(v).ok())
                .and_then(|s| s.parse::<u64>().ok())
        };
        (
            get("MemorySize").unwrap_or(128) as u32,
            get("Timeout").unwrap_or(3),
        )
    }

    /// Creates the template's tables, buckets, buses, queues, topics and parameters in the
    /// emulator. Safe to run again: existing resources are left as they are.
    pub async fn provision(&self, cfg: &SdkConfig) -> Result<Vec<String>, HarnessError> {
        let mut made = Vec::new();
        let ddb = aws_sdk_dynamodb::Client::new(cfg);
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(cfg)
                .force_path_style(true)
                .build(),
        );
        let events = aws_sdk_eventbridge::Client::new(cfg);
        let sns = aws_sdk_sns::Client::new(cfg);
        let ssm = aws_sdk_ssm::Client::new(cfg);
        let names: Vec<String> = self.resources().map(|(k, _)| k.to_owned()).collect();
        for logical in names {
            let ty = self.resource_type(&logical).unwrap_or_default().to_owned();
            let name = self.physical_name(&logical)?;
            let result: Result<(), String> = match ty.as_str() {
                "AWS::DynamoDB::Table" => create_table(&ddb, self, &logical, &name).await,
                "AWS::S3::Bucket" => match s3.create_bucket().bucket(&name).send().await {
                    Ok(_) => Ok(()),
                    Err(e) if already_exists(&e) => Ok(()),
                    Err(e) => Err(format!("{e:?}")),
                },
                "AWS::Events::EventBus" => match events.create_event_bus().name(&name).send().await
                {
                    Ok(_) => Ok(()),
                    Err(e) if already_exists(&e) => Ok(()),
                    Err(e) => Err(format!("{e:?}")),
                },
                "AWS::SQS::Queue" => match cfg.endpoint_url() {
                    Some(ep) => crate::emulator::Control::new(ep)
                        .aws_json(
                            "AmazonSQS.CreateQueue",
                            serde_json::json!({ "QueueName": name }),
                        )
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                    None => Err("queues are provisioned only in the emulator".to_owned()),
                },
                "AWS::SNS::Topic" => sns
                    .create_topic()
                    .name(&name)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("{e:?}")),
                "AWS::SSM::Parameter" => {
                    let value = self
                        .props(&logical)
                        .and_then(|p| p.get("Value"))
                        .map(|v| self.resolve_str(v))
                        .transpose()?
                        .unwrap_or_default();
                    match ssm
                        .put_parameter()
                        .name(&name)
                        .value(value)
                        .r#type(aws_sdk_ssm::types::ParameterType::String)
                        .overwrite(true)
                        .send()
                        .await
                    {
                        Ok(_) => Ok(()),
                        Err(e) => Err(format!("{e:?}")),
                    }
                }
                _ => continue,
            };
            result.map_err(|e| err(format!("provision {logical} ({ty}): {e}")))?;
            made.push(format!("{ty} {name}"));
        }
        Ok(made)
    }
}

fn already_exists<E: std::fmt::Debug>(e: &E) -> bool {
    let s = format!("{e:?}");
    s.contains("AlreadyExists") || s.contains("AlreadyOwnedByYou") || s.contains("ResourceInUse")
}

async fn create_table(
    ddb: &aws_sdk_dynamodb::Client,
    t: &Template,
    logical: &str,
    name: &str,
) -> Result<(), String> {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    };
    let props = t.props(logical).cloned().unwrap_or(Value::Null);
    let mut req = ddb
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest);
    for a in props
        .get("AttributeDefinitions")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
    {
        let n = a
            .get("AttributeName")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let ty = match a.get("AttributeType").and_then(Value::as_str) {
            Some("N") => ScalarAttributeType::N,
            Some("B") => ScalarAttributeType::B,
            _ => ScalarAttributeType::S,
        };
        req = req.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(n)
                .attribute_type(ty)
                .build()
                .map_err(|e| e.to_string())?,
        );
    }
    for k in props
        .get("KeySchema")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
    {
        let n = k
            .get("AttributeName")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let kt = if k.get("KeyType").and_then(Value::as_str) == Some("RANGE") {
            KeyType::Range
        } else {
            KeyType::Hash
        };
        req = req.key_schema(
            KeySchemaElement::builder()
                .attribute_name(n)
                .key_type(kt)
                .build()
                .map_err(|e| e.to_string())?,
        );
    }
    match req.send().await {
        Ok(_) => Ok(()),
        Err(e) if already_exists(&e) => Ok(()),
        Err(e) => Err(format!("{e:?}")),
    }
}

/// `!Ref x` (tagged) or `{Ref: x}` / `{Fn::Sub: ...}` (long form) → (function name, argument).
fn intrinsic(v: &Value) -> Option<(&str, &Value)> {
    match v {
        Value::Tagged(t) => {
            let tag = t.tag.to_string();
            let name = tag.trim_start_matches('!');
            // The tag's text lives in the tagged value; map it to a static name.
            let known = [
                "Ref",
                "GetAtt",
                "Sub",
                "Join",
                "If",
                "Select",
                "Split",
                "Equals",
                "Not",
                "And",
                "Or",
                "Condition",
                "FindInMap",
                "ImportValue",
                "GetAZs",
                "Base64",
                "Cidr",
                "ToJsonString",
            ];
            known.iter().find(|k| **k == name).map(|k| (*k, &t.value))
        }
        Value::Mapping(m) if m.len() == 1 => {
            let (k, inner) = m.iter().next()?;
            let k = k.as_str()?;
            let name = if k == "Ref" || k == "Condition" {
                k
            } else {
                k.strip_prefix("Fn::")?
            };
            Some((name, inner))
        }
        _ => None,
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => Some(String::new()),
        _ => None,
    }
}
