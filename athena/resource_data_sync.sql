-- Resource Data Sync layout: <PREFIX>/<TypeName>/accountid=<a>/region=<r>/resourcetype=ManagedInstanceInventory/<node>.json
CREATE EXTERNAL TABLE IF NOT EXISTS aws_application (
  name string,
  applicationtype string,
  publisher string,
  version string,
  installedtime string,
  architecture string,
  url string,
  summary string,
  packageid string,
  release string,
  epoch string,
  resourceid string,
  capturetime string,
  schemaversion string
)
PARTITIONED BY (accountid string, region string, resourcetype string)
ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'
LOCATION 's3://<BUCKET>/<PREFIX>/AWS:Application/'
TBLPROPERTIES (
  'projection.enabled' = 'true',
  'projection.accountid.type' = 'enum',
  'projection.accountid.values' = '<ACCOUNT_IDS>',
  'projection.region.type' = 'enum',
  'projection.region.values' = '<REGIONS>',
  'projection.resourcetype.type' = 'enum',
  'projection.resourcetype.values' = 'ManagedInstanceInventory',
  'storage.location.template' = 's3://<BUCKET>/<PREFIX>/AWS:Application/accountid=${accountid}/region=${region}/resourcetype=${resourcetype}'
);

CREATE EXTERNAL TABLE IF NOT EXISTS aws_instanceinformation (
  agenttype string,
  agentversion string,
  computername string,
  instanceid string,
  instancestatus string,
  ipaddress string,
  platformname string,
  platformtype string,
  platformversion string,
  resourcetype string,
  resourceid string,
  capturetime string,
  schemaversion string
)
PARTITIONED BY (accountid string, region string, resourcetype_partition string)
ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'
LOCATION 's3://<BUCKET>/<PREFIX>/AWS:InstanceInformation/'
TBLPROPERTIES (
  'projection.enabled' = 'true',
  'projection.accountid.type' = 'enum',
  'projection.accountid.values' = '<ACCOUNT_IDS>',
  'projection.region.type' = 'enum',
  'projection.region.values' = '<REGIONS>',
  'projection.resourcetype_partition.type' = 'enum',
  'projection.resourcetype_partition.values' = 'ManagedInstanceInventory',
  'storage.location.template' = 's3://<BUCKET>/<PREFIX>/AWS:InstanceInformation/accountid=${accountid}/region=${region}/resourcetype=${resourcetype_partition}'
);
