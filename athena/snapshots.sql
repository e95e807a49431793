-- Snapshot layout: <PREFIX>/snapshots/<TypeName>/dt=<yyyy-mm-dd>/run=<run-id>/accountid=<a>/region=<r>/part-NNNNN.json
-- Partitioned by dt only; the run folders below dt are read recursively, runid is a column.
CREATE EXTERNAL TABLE IF NOT EXISTS inventory_snapshot_application (
  name string,
  applicationtype string,
  publisher string,
  version string,
  installedtime string,
  architecture string,
  packageid string,
  release string,
  summary string,
  resourceid string,
  capturetime string,
  schemaversion string,
  accountid string,
  region string,
  runid string
)
PARTITIONED BY (dt string)
ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'
LOCATION 's3://<BUCKET>/<PREFIX>/snapshots/AWS:Application/'
TBLPROPERTIES (
  'projection.enabled' = 'true',
  'projection.dt.type' = 'date',
  'projection.dt.format' = 'yyyy-MM-dd',
  'projection.dt.range' = '2024-01-01,NOW',
  'projection.dt.interval' = '1',
  'projection.dt.interval.unit' = 'DAYS',
  'storage.location.template' = 's3://<BUCKET>/<PREFIX>/snapshots/AWS:Application/dt=${dt}/'
);

CREATE EXTERNAL TABLE IF NOT EXISTS inventory_snapshot_instanceinformation (
  agentversion string,
  computername string,
  instancestatus string,
  ipaddress string,
  platformname string,
  platformtype string,
  platformversion string,
  resourcetype string,
  resourceid string,
  capturetime string,
  schemaversion string,
  accountid string,
  region string,
  runid string
)
PARTITIONED BY (dt string)
ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'
LOCATION 's3://<BUCKET>/<PREFIX>/snapshots/AWS:InstanceInformation/'
TBLPROPERTIES (
  'projection.enabled' = 'true',
  'projection.dt.type' = 'date',
  'projection.dt.format' = 'yyyy-MM-dd',
  'projection.dt.range' = '2024-01-01,NOW',
  'projection.dt.interval' = '1',
  'projection.dt.interval.unit' = 'DAYS',
  'storage.location.template' = 's3://<BUCKET>/<PREFIX>/snapshots/AWS:InstanceInformation/dt=${dt}/'
);
